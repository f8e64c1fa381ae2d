"""Channels from the gateway to an agent: the SSE answer of one POST, or a session's GET stream.

A channel is a queue of JSON-RPC messages; the endpoint drains it onto the HTTP response. A POST's answer
stays plain JSON unless something (progress, a log message, a server→client request) must reach the agent
before the final response: then it becomes an SSE stream.
"""

from __future__ import annotations

import asyncio
import itertools

_ids = itertools.count(1)


class Channel:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.closed = False
        self.id = next(_ids)

    async def put(self, message: dict) -> bool:
        if self.closed:
            return False
        await self.queue.put(message)
        return True

    async def get(self) -> dict:
        return await self.queue.get()

    def close(self) -> None:
        self.closed = True


def sse_event(message: bytes, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n".encode() if event_id else b""
    return head + b"event: message\ndata: " + message + b"\n\n"


KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_MESSAGE = {"portcullis:keepalive": True}  # put in a channel: the endpoint writes an SSE comment


def render(message: dict) -> bytes:
    from gateway.jsonrpc import dumps

    return KEEPALIVE if message is KEEPALIVE_MESSAGE else sse_event(dumps(message))
