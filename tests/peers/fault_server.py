"""A stdio MCP server that misbehaves on request, for the gateway's fault tests (a real process, not a mock).

Tools: `ok` answers at once; `sleep` hangs for the given seconds; `die` exits the process mid-call;
`garbage` writes a non-JSON line to stdout before answering; `huge` answers with a text of the given size;
`stats` reports how many cancellations arrived and this process's pid. `--session-only` removes the stateless
era's `server/discover`, so clients fall back to `initialize` (a session-era-only upstream, whose `ask` then asks
with a server→client request mid-call).
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel

server = MCPServer("fault-server")
CANCELLED = {"count": 0}


@server.tool()
async def ok(text: str = "fine") -> str:
    return f"ok: {text}"


@server.tool()
async def sleep(seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        CANCELLED["count"] += 1
        raise
    return f"slept {seconds}"


@server.tool()
async def die() -> str:
    sys.stdout.flush()
    os._exit(3)


@server.tool()
async def garbage() -> str:
    sys.stdout.write("this is not JSON-RPC\n")
    sys.stdout.flush()
    return "after garbage"


@server.tool()
async def huge(size: int) -> str:
    return "x" * size


class Answer(BaseModel):
    answer: str


@server.tool()
async def ask(question: str, ctx: Context) -> str:
    """Asks the user (elicitation): a server→client request in the session era, input_required in the
    stateless era."""
    try:
        result = await ctx.elicit(question, Answer)
    except asyncio.CancelledError:
        CANCELLED["count"] += 1
        raise
    return f"user said: {result.data.answer}" if result.action == "accept" else f"user {result.action}"


@server.tool()
async def ask_two(ctx: Context) -> str:
    """Asks twice: two questions in one call."""
    first = await ctx.elicit("first name?", Answer)
    last = await ctx.elicit("last name?", Answer)
    if first.action != "accept" or last.action != "accept":
        return "user declined"
    return f"hello {first.data.answer} {last.data.answer}"


@server.tool()
async def stats() -> str:
    return f"pid={os.getpid()} cancelled={CANCELLED['count']}"


if __name__ == "__main__":
    if "--session-only" in sys.argv:
        sys.argv.remove("--session-only")
        server._lowlevel_server._request_handlers.pop("server/discover", None)
    if len(sys.argv) == 3 and sys.argv[1] == "--http":  # Streamable HTTP on 127.0.0.1:<port>/mcp
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
