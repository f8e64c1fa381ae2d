"""A stdio MCP server for the resumability tests (a real process, not a mock).

Tools: `count` reports progress once per step, then answers; `announce_later` answers at once and afterwards
sends `notifications/resources/list_changed` on its own (not tied to any request: the session's GET stream).
"""

from __future__ import annotations

import asyncio

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("progress-server")
_LATER: set[asyncio.Task] = set()


@server.tool()
async def count(steps: int, interval: float, ctx: Context) -> str:
    for step in range(1, steps + 1):
        await asyncio.sleep(interval)
        await ctx.report_progress(step, steps, f"step {step}")
    return f"counted {steps}"


@server.tool()
async def announce_later(times: int, delay: float, ctx: Context) -> str:
    session = ctx.session

    async def later() -> None:
        for _ in range(times):
            await asyncio.sleep(delay)
            await session.send_resource_list_changed()

    task = asyncio.get_running_loop().create_task(later())
    _LATER.add(task)
    task.add_done_callback(_LATER.discard)
    return f"{times} announcements scheduled"


if __name__ == "__main__":
    server.run("stdio")
