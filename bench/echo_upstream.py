"""The smallest useful MCP upstream for the gateway bench: one tool, `echo`, served over Streamable HTTP.

Run: .venv/bin/python -m bench.echo_upstream --port 8766 [--json]   →  http://127.0.0.1:8766/mcp
     .venv/bin/python -m bench.echo_upstream --stdio                 →  the same server on stdin/stdout
     … --tools 279                                                   →  echo and 278 filler tools listed

Why not the TrueNAS simulator: its 278-tool catalogue and stateful dispatcher add work that has nothing
to do with the gateway. This server does no I/O and answers the same text for the same arguments, so
what the bench sees on top of it is the gateway's own cost. It is the SDK's low-level `Server` on uvicorn,
like the simulator, so the transport code is the one real Python upstreams run.

GET /stats answers the POSTs seen so far per MCP-Protocol-Version header: it shows which protocol era the
gateway speaks upstream and that every call reached the upstream.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server

ECHO_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "text to send back"}},
    "required": ["text"],
}
ECHO_TOOL = types.Tool(name="echo", description="Return the given text unchanged.", input_schema=ECHO_SCHEMA,
                       annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True))


TOOLS = [ECHO_TOOL]  # --tools N adds N-1 more, so a catalogue the size of TrueNAS's (279) can be measured


def filler_tool(n: int) -> types.Tool:
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "description": f"the object tool {n} works on"},
        "options": {"type": "object", "description": "settings", "additionalProperties": {"type": "string"}},
        "force": {"type": "boolean"}}, "required": ["name"]}
    return types.Tool(name=f"tool_{n:03d}", description=f"Filler tool {n}: does nothing the bench calls.",
                      input_schema=schema)


async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    if params.name != "echo":
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"unknown tool {params.name}")],
                                    is_error=True)
    text = str((params.arguments or {}).get("text", ""))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def tool_schema(name: str) -> dict | None:
    # Without this the low-level server lists its tools again on every modern-era tools/call.
    return ECHO_SCHEMA if name == "echo" else None


class CountingApp:
    """Counts POSTs per protocol version header and answers GET /stats; everything else goes to the SDK app."""

    def __init__(self, app) -> None:
        self.app = app
        self.posts: Counter[str] = Counter()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/stats":
            await self._send_stats(send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            version = next((v for k, v in scope["headers"] if k == b"mcp-protocol-version"), b"(none)")
            self.posts[version.decode("latin-1")] += 1
        await self.app(scope, receive, send)

    async def _send_stats(self, send) -> None:
        body = json.dumps({"posts_by_protocol_version": dict(self.posts)}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def build_server() -> Server[Any]:
    return Server("bench-echo", version="1.0", get_tool_input_schema=tool_schema, on_list_tools=list_tools,
                  on_call_tool=call_tool)


def run_stdio() -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    async def serve() -> None:
        server = build_server()
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(serve)


def build_app(json_response: bool) -> CountingApp:
    server = build_server()
    return CountingApp(server.streamable_http_app(streamable_http_path="/mcp", json_response=json_response,
                                                  host="127.0.0.1"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--json", action="store_true", help="answer POSTs with JSON instead of SSE")
    parser.add_argument("--stdio", action="store_true", help="serve on stdin/stdout instead of HTTP")
    parser.add_argument("--tools", type=int, default=1, help="list this many tools (echo and fillers)")
    args = parser.parse_args(argv)
    TOOLS[1:] = [filler_tool(n) for n in range(1, args.tools)]
    if args.stdio:
        run_stdio()
        return
    print(f"bench echo upstream on http://127.0.0.1:{args.port}/mcp", file=sys.stderr, flush=True)
    # The SDK's session manager needs lifespan; uvicorn's access log would cost more than the tool itself.
    uvicorn.run(build_app(args.json), host="127.0.0.1", port=args.port, log_level="warning", lifespan="on",
                access_log=False)


if __name__ == "__main__":
    main()
