"""Ready-to-paste client configurations for one server's gateway URL and a grant token."""

from __future__ import annotations

import json
import shlex

from django.conf import settings

TOKEN_PLACEHOLDER = "<grant token>"  # noqa: S105 - a placeholder shown in docs, not a secret


def gateway_url(slug: str, base_url: str | None = None) -> str:
    return f"{(base_url or settings.PORTCULLIS_PUBLIC_URL).rstrip('/')}/mcp/{slug}/"


def client_configs(slug: str, token: str = TOKEN_PLACEHOLDER, base_url: str | None = None) -> dict[str, str]:
    """Titles → text to paste, for Claude Code, Cursor, VS Code and the MCP Inspector CLI."""
    url = gateway_url(slug, base_url)
    header = f"Authorization: Bearer {token}"
    return {
        "Claude Code": shlex.join(["claude", "mcp", "add", "--transport", "http", slug, url, "--header", header]),
        "Cursor (.cursor/mcp.json)": json.dumps(
            {"mcpServers": {slug: {"url": url, "headers": {"Authorization": f"Bearer {token}"}}}}, indent=2),
        "VS Code (.vscode/mcp.json)": json.dumps(
            {"servers": {slug: {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}}},
            indent=2),
        # --header takes several values: it goes last, or it would swallow what follows.
        "MCP Inspector CLI": shlex.join(["npx", "@modelcontextprotocol/inspector", "--cli", url, "--method",
                                         "tools/list", "--transport", "http", "--header", header]),
    }


def render_text(slug: str, token: str = TOKEN_PLACEHOLDER, base_url: str | None = None) -> str:
    parts = []
    for title, text in client_configs(slug, token, base_url).items():
        parts.append(f"# {title}\n{text}\n")
    return "\n".join(parts)
