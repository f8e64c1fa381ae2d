"""The agent-facing MCP endpoint, /mcp/<slug>/ (Streamable HTTP, both eras): a plain ASGI app under Channels'
URLRouter. The HTTP checks every MCP request passes are in http_io.py; protocol work is in gateway/protocol/.
A POST is answered as plain JSON, or as an SSE stream when something must reach the agent before the result.
"""

from __future__ import annotations

import asyncio

from django.db import DatabaseError

from gateway.edge import drain
from gateway.edge.http_io import (
    bearer_token,
    guarded,
    preflight,
    pump,
    read_message,
    send_json,
    send_reply,
    start_sse,
    wait_disconnect,
)
from gateway.grants import AuthFailure
from gateway.protocol import jsonrpc, relay
from gateway.protocol.era import Era, era_of
from gateway.protocol.exchange import Request
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.sessions import REGISTRY
from gateway.protocol.streams import KEEPALIVE, Channel


class McpEndpoint:
    async def __call__(self, scope, receive, send) -> None:
        headers = await preflight(scope, send)
        if headers is None:
            return
        slug = scope["url_route"]["kwargs"]["slug"]
        token = bearer_token(headers)
        req = Request(slug=slug, token=token, headers=headers, session_id=headers.get("mcp-session-id"))
        method = scope["method"]
        if method == "POST":
            await self._post(req, headers, receive, send)
        elif method == "DELETE":
            reply = await guarded(relay.end_session(req), None)
            await send_reply(send, reply)
        elif method == "GET":
            await self._get(req, headers, receive, send)
        else:
            await send_json(send, 405, {"error": f"method {method} not allowed"}, [("allow", "POST, GET, DELETE")])

    async def _post(self, req, headers, receive, send) -> None:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            await send_json(send, 415,
                            RpcError(jsonrpc.INVALID_REQUEST, "Content-Type must be application/json").body())
            return
        accept = headers.get("accept", "")
        if accept and "application/json" not in accept and "*/*" not in accept:
            await send_json(send, 406, RpcError(jsonrpc.INVALID_REQUEST,
                                                "Accept must include application/json").body())
            return
        msg = await read_message(headers, receive, send)
        if msg is None:
            return
        if not req.token:
            err = RpcError(jsonrpc.UNAUTHORIZED, "missing bearer token: send Authorization: Bearer <grant token>",
                           id=msg.id)
            await send_json(send, 401, err.body(), [("www-authenticate", 'Bearer realm="portcullis"')])
            return
        if "text/event-stream" in accept and msg.is_request:
            req.channel = _channel_for(req)
        await _answer(req, msg, receive, send)

    async def _get(self, req, headers, receive, send) -> None:
        """The session era's server stream: notifications and server requests not tied to a POST; with
        Last-Event-ID, the rest of an earlier stream of the same session (a POST's answer or a GET stream)."""
        if "text/event-stream" not in headers.get("accept", ""):
            await send_json(send, 406,
                            RpcError(jsonrpc.INVALID_REQUEST, "Accept must include text/event-stream").body())
            return
        last_event_id = headers.get("last-event-id") or None
        try:
            if not req.token:
                raise RpcError(jsonrpc.UNAUTHORIZED, "missing bearer token")
            stream, feed = await relay.open_get_stream(req, last_event_id)
        except (RpcError, AuthFailure, DatabaseError) as exc:
            await send_reply(send, relay.refused(exc))
            return
        await start_sse(send)
        # daphne sends the status line and headers only with the first body chunk: send one now, or the agent
        # cannot tell its stream is open until the first message or keep-alive arrives.
        opening = stream.priming() if last_event_id is None else None
        await send({"type": "http.response.body", "body": opening or KEEPALIVE, "more_body": True})
        gone = asyncio.create_task(wait_disconnect(receive))
        try:
            await pump(feed, gone, send)
        finally:
            stream.detach(feed)  # the stream lives on (resumable) until the session ends or a new GET replaces it


def _channel_for(req) -> Channel:
    """Session era: a resumable stream of the agent's own session. Elsewhere (stateless era, no such session:
    the relay refuses it) a channel that keeps nothing."""
    session = REGISTRY.get(req.session_id, req.slug) if req.session_id else None
    if session is not None and session.owned_by(req.token):
        return session.new_stream()
    return Channel()


async def _answer(req, msg, receive, send) -> None:
    """Plain JSON when the answer is all there is; SSE when something must reach the agent first. One future wakes
    this on whichever comes first (the call's end, a frame on the channel, the agent leaving): no task per POST
    beyond the call's own (and, in the stateless era, the one that notices the agent leaving)."""
    channel = req.channel
    woken = asyncio.get_running_loop().create_future()

    def wake(*_) -> None:
        if not woken.done():
            woken.set_result(None)

    task = drain.track(asyncio.create_task(guarded(relay.handle(req, msg), msg.id)))
    task.add_done_callback(wake)
    # Stateless era: closing the response stream is the cancellation. Session era: a disconnect is not one;
    # the call finishes upstream and is audited (an answer to an agent that left goes nowhere).
    cancel_on_leave = req.session_id is None and era_of(msg.method, msg.params, None) is Era.STATELESS
    gone = asyncio.create_task(wait_disconnect(receive)) if cancel_on_leave else None
    if gone is not None:
        gone.add_done_callback(wake)
    feed = channel.feed if channel is not None else None
    if feed is not None:
        feed.waiter = wake
    streaming = False
    try:
        await woken
        if feed is not None and not task.done() and not (gone is not None and gone.done()):
            first = feed.get_nowait()
            if first is None:  # the session ended before anything was sent: the call's end decides
                await asyncio.wait({task} | ({gone} if gone else set()), return_when=asyncio.FIRST_COMPLETED)
            else:
                streaming = True
                feed.waiter = None
                if gone is None:
                    gone = asyncio.create_task(wait_disconnect(receive))
                await _stream(channel, feed, first, task, gone, send, cancel_on_leave)
                return
        if task.done():
            await send_reply(send, task.result())
        elif gone is not None and gone.done() and cancel_on_leave:
            task.cancel()
    finally:
        if gone is not None and not streaming:
            gone.cancel()
        if feed is not None:
            feed.waiter = None
        if channel is not None and not streaming:
            channel.discard()  # answered as plain JSON, or the agent left before any event id reached it


async def _stream(channel, feed, first: bytes, task, gone, send, cancel_on_leave: bool) -> None:
    """A POST answered as SSE: what the channel sends, then the final response (recorded by the channel
    itself when the call ends, so a resumable stream still gets it after the agent has left)."""
    await start_sse(send)
    await send({"type": "http.response.body", "body": (channel.priming() or b"") + first, "more_body": True})
    task.add_done_callback(lambda done: channel.finish(_final_body(done)))
    ended = False
    try:
        ended = await pump(feed, gone, send)
    finally:
        if not ended:  # the agent left (or daphne gave up on the response) before the stream ended
            if cancel_on_leave:
                task.cancel()
            channel.detach(feed)  # session era: the call goes on; what it sends is kept for Last-Event-ID


def _final_body(task: asyncio.Task) -> dict | None:
    """The call's final JSON-RPC response; None when it was cancelled (no response follows a cancellation)."""
    if task.cancelled() or task.exception() is not None:
        return None
    body = task.result().body
    return body if body is not None else {}


