"""Channels from the gateway to an agent: the SSE answer of one POST, or a session's GET stream.

A channel turns JSON-RPC messages into SSE frames on its feed, a queue the endpoint drains onto the HTTP
response; `None` on the feed ends the response. A POST's answer stays plain JSON unless something (progress, a
log message, a server→client request) must reach the agent before the final response: then it becomes an SSE
stream. The channels here keep nothing once written (the stateless era, where closing the stream cancels the
call, and the legacy HTTP+SSE stream, which is the session); session-era streams are resumable
(gateway/protocol/resumption.py).
"""

from __future__ import annotations

import asyncio

from gateway.protocol.jsonrpc import dumps

KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_MESSAGE = {"portcullis:keepalive": True}  # put in a channel: the endpoint writes an SSE comment


class Feed(asyncio.Queue):
    """A channel's frames; `waiter` (if set) is called after each one is queued, so the endpoint can wait for the
    first frame and the call's end together without a task reading the queue."""

    waiter = None

    def put_nowait(self, item) -> None:
        super().put_nowait(item)
        if self.waiter is not None:
            self.waiter()


class Channel:
    def __init__(self) -> None:
        # The frames for the response that reads this channel; None once nobody reads it.
        self.feed: Feed | None = Feed()
        self.closed = False

    async def put(self, message: dict) -> bool:
        """Send a message to the agent; False when the channel is closed (the message goes nowhere)."""
        if self.closed:
            return False
        self._write(message)
        return True

    def _write(self, message: dict) -> None:
        if self.feed is not None:
            self.feed.put_nowait(render(message))

    def priming(self) -> bytes | None:
        """The event that opens an SSE answer, if any (resumable streams send one: see resumption.py)."""
        return None

    def finish(self, final: dict | None) -> None:
        """The call is over: its final response (None when it was cancelled: no response follows) ends the stream."""
        if self.closed:
            return
        if final is not None:
            self._write(final)
        self.close()

    def detach(self, feed: asyncio.Queue) -> None:
        """The response reading `feed` is gone; later messages are not queued for it."""
        if self.feed is feed:
            self.feed = None

    def discard(self) -> None:
        """Nothing more will be sent on this channel."""
        self.close()

    def close(self) -> None:
        """No more messages; the response reading the channel ends."""
        self.closed = True
        if self.feed is not None:
            self.feed.put_nowait(None)
            self.feed = None


def sse_event(message: bytes, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n".encode() if event_id else b""
    return head + b"event: message\ndata: " + message + b"\n\n"


def render(message: dict) -> bytes:
    return KEEPALIVE if message is KEEPALIVE_MESSAGE else sse_event(dumps(message))
