"""`make run PORT=N` on any port: the demo prints configurations for that port, the server accepts that address's
Host and Origin (MCP endpoint and the dashboard's websocket), and every printed configuration works when run as
printed (the Inspector command verbatim; the Claude Code, Cursor and VS Code ones by connecting with exactly their
URL and header through the Python SDK)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import socket
import subprocess

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import ROOT, free_port, stop, wait_for_port

pytestmark = pytest.mark.slow

PASSWORD = "make-run-test-password"  # noqa: S105 - a test account's


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`make run PORT=<free port>` in its own state directory (SQLite, in-memory channel layer)."""
    state = tmp_path_factory.mktemp("make-run")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "PORTCULLIS_SERVED_URL", "PORTCULLIS_PUBLIC_URL",
                        "PORTCULLIS_ALLOWED_ORIGINS", "ALLOWED_HOSTS", "MAKEFLAGS", "MAKELEVEL")}
    env.update(PORTCULLIS_STATE_DIR=str(state), PORTCULLIS_ADMIN_PASSWORD=PASSWORD)
    out = open(state / "make-run.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, proc, timeout=180)
        yield port, (state / "make-run.log").read_text()
    finally:
        os.killpg(proc.pid, 15)
        stop(proc)
        out.close()


def configs(printed: str) -> dict[str, str]:
    """The client configurations under `# <title>` headings of the demo's printout."""
    found, title, lines = {}, None, []
    for line in printed.splitlines() + ["# end"]:
        if line.startswith("# ") or (title and lines and not line.strip()):  # a heading or the blank line after
            if title:
                found[title] = "\n".join(lines).strip()
            title, lines = (line[2:] if line.startswith("# ") else None), []
        elif title:
            lines.append(line)
    return found


def test_the_demo_prints_the_served_port_only(served):
    port, printed = served
    assert f"http://127.0.0.1:{port}/mcp/truenas/" in printed
    assert ":8000" not in printed


def test_the_served_address_is_accepted_and_a_foreign_origin_refused(served):
    port, _ = served
    url = f"http://127.0.0.1:{port}/mcp/truenas/"
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {}}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        assert httpx2.post(url, json=body, headers={**headers, "Origin": origin}, timeout=30).status_code == 401
    assert httpx2.post(url, json=body, headers={**headers, "Origin": "http://127.0.0.1:8000"},
                       timeout=30).status_code == 403


def websocket_status(port: int, origin: str, cookie: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall((f"GET /ws/live/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\nCookie: {cookie}\r\n\r\n").encode())
        return int(sock.recv(200).split(b" ")[1])


def test_the_dashboards_live_updates_connect_on_the_served_port(served):
    port, _ = served
    base = f"http://127.0.0.1:{port}"
    with httpx2.Client(base_url=base, timeout=30, headers={"Origin": base}) as browser:
        login = browser.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        signed_in = browser.post("/login/", data={"username": "admin", "password": PASSWORD,
                                                  "csrfmiddlewaretoken": token}, headers={"Referer": base + "/login/"})
        assert signed_in.status_code == 302, signed_in.text
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    assert websocket_status(port, base, cookie) == 101
    assert websocket_status(port, "http://127.0.0.1:8000", cookie) == 403


def test_every_printed_configuration_works_as_printed(served):
    port, printed = served
    printed_configs = configs(printed[printed.index("## truenas\n"):printed.index("## truenas-umbrella\n")])
    assert set(printed_configs) >= {"Claude Code", "Cursor (.cursor/mcp.json)", "VS Code (.vscode/mcp.json)",
                                    "MCP Inspector CLI"}
    inspector = shlex.split(printed_configs["MCP Inspector CLI"])
    assert inspector[:3] == ["npx", "@modelcontextprotocol/inspector", "--cli"]
    proc = subprocess.run(inspector, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "npm_config_offline": "true"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert "pool_list" in [t["name"] for t in listed["tools"]]

    claude = shlex.split(printed_configs["Claude Code"])
    cursor = json.loads(printed_configs["Cursor (.cursor/mcp.json)"])["mcpServers"]["truenas"]
    vscode = json.loads(printed_configs["VS Code (.vscode/mcp.json)"])["servers"]["truenas"]
    header = claude[claude.index("--header") + 1]
    targets = [(claude[6], dict([header.split(": ", 1)])), (cursor["url"], cursor["headers"]),
               (vscode["url"], vscode["headers"])]

    async def list_tools(url, headers):
        http = httpx2.AsyncClient(headers=headers, timeout=60)
        async with Client(streamable_http_client(url, http_client=http), cache=None) as client:
            return [t.name for t in (await client.list_tools()).tools]

    for url, headers in targets:
        assert url == f"http://127.0.0.1:{port}/mcp/truenas/"
        assert "pool_list" in asyncio.run(asyncio.wait_for(list_tools(url, headers), 60)), url


def test_the_one_tool_server_of_the_demo_is_governed_by_the_same_seed_policy(served):
    """The demo's second server lists one tool, as the real TrueNAS server does; the seed policy decides its
    actions as it decides the flat server's tools."""
    port, printed = served
    token = next(line.rsplit(" ", 1)[1] for line in printed.splitlines() if line.startswith("token"))

    async def through(slug: str, name: str, arguments: dict) -> tuple[list, bool, str]:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp/{slug}/", http_client=http),
                          cache=None) as client:
            tools = (await client.list_tools()).tools
            result = await client.call_tool(name, arguments)
            return tools, result.is_error, result.content[0].text

    tools, error, _ = asyncio.run(through("truenas-umbrella", "truenas",
                                          {"category": "storage", "action": "pool_list", "params": {}}))
    assert [t.name for t in tools] == ["truenas"] and not error
    enum = tools[0].input_schema["properties"]["action"]["enum"]
    assert "pool_list" in enum and "cloud_backup_run" in enum and "dataset_delete" not in enum
    _, error, text = asyncio.run(through("truenas-umbrella", "truenas", {
        "category": "storage", "action": "dataset_delete", "params": {"id": "tank/media", "confirm": True}}))
    _, flat_error, flat_text = asyncio.run(through("truenas", "dataset_delete", {"id": "tank/media", "confirm": True}))
    assert error and flat_error and text == flat_text and text.startswith("denied by policy: destructive tools")
