"""The legacy HTTP+SSE transport (protocol 2024-11-05) for older clients: /mcp/<slug>/sse and /messages.

GET /sse opens the stream and names the endpoint for POSTs; each POST answers 202 and its JSON-RPC reply
travels back on the stream. Behind it is the same session machinery as Streamable HTTP (relay.py).

The work of a POST belongs to the stream, not to the POST: daphne ends a request's application instance
`application_close_timeout` (10 s) after its response, so a slow tool, a late approval or an undecided hold would
be killed mid-call. Each message is handled by a task the stream owns; it ends when the stream ends.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

from django.conf import settings
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
from gateway.protocol import jsonrpc, peers, relay
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.sessions import REGISTRY
from gateway.protocol.streams import Channel

# Streams opened by GET /sse: id → (slug, token digest, channel, grant id); the id is also the session id.
_STREAMS: dict[str, tuple[str, str, Channel, int]] = {}
# id → the tasks handling that stream's messages (cancelled when the stream ends).
_WORK: dict[str, set[asyncio.Task]] = {}
MAX_STREAMS = 200  # open legacy streams per process; more are refused, not queued


class LegacySseEndpoint:
    async def __call__(self, scope, receive, send) -> None:
        headers = await preflight(scope, send)
        if headers is None:
            return
        slug, leg = scope["url_route"]["kwargs"]["slug"], scope["url_route"]["kwargs"]["leg"]
        token = bearer_token(headers)
        if not token:
            await send_json(send, 401, RpcError(jsonrpc.UNAUTHORIZED, "missing bearer token").body(),
                        [("www-authenticate", 'Bearer realm="portcullis"')])
            return
        if leg == "sse" and scope["method"] == "GET":
            await _open_stream(slug, token, headers, receive, send)
        elif leg == "messages" and scope["method"] == "POST":
            session_id = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("sessionId", [""])[0]
            await _message(slug, token, headers, session_id, receive, send)
        else:
            await send_json(send, 405, {"error": "use GET /sse and POST /messages"})


async def _open_stream(slug, token, headers, receive, send) -> None:
    from gateway import tokens

    try:
        _, grant_id = await relay.authorise(slug, token)
    except (relay.AuthFailure, RpcError, DatabaseError) as exc:
        await send_reply(send, relay.refused(exc))
        return
    cap = settings.PORTCULLIS_LEGACY_STREAMS_PER_GRANT
    if sum(1 for entry in _STREAMS.values() if entry[3] == grant_id) >= cap:
        err = RpcError(jsonrpc.TOO_MANY_SESSIONS, f"this grant has {cap} legacy SSE streams open on this gateway "
                                                  "process: close one (each stream is a session)")
        await send_json(send, err.http_status, err.body())
        return
    if len(_STREAMS) >= MAX_STREAMS:
        err = RpcError(jsonrpc.TOO_MANY_SESSIONS, "too many legacy SSE streams open on this gateway process; "
                                                  "try again shortly")
        await send_json(send, err.http_status, err.body(), relay.RETRY_LATER)
        return
    stream_id, channel = peers.new_id(24), Channel()  # the id names this process: POSTs elsewhere come here
    _STREAMS[stream_id] = (slug, tokens.digest(token), channel, grant_id)
    await start_sse(send)
    endpoint = f"/mcp/{slug}/messages?sessionId={stream_id}".encode()
    await send({"type": "http.response.body", "body": b"event: endpoint\ndata: " + endpoint + b"\n\n",
                "more_body": True})
    gone = asyncio.create_task(wait_disconnect(receive))
    _WORK[stream_id] = set()
    try:
        await pump(channel.feed, gone, send)
    finally:
        channel.close()
        _STREAMS.pop(stream_id, None)
        for task in _WORK.pop(stream_id, ()):
            task.cancel()  # in the session era a disconnect is not a cancellation, but the session ends now
        await REGISTRY.end(stream_id)  # the stream is the session: when it goes, so does the upstream


async def _message(slug, token, headers, session_id, receive, send) -> None:
    """A POSTed message: handled by this process's stream, or passed to the process holding the stream (its id
    names it: peers.py); 202 once the stream's task has it, 404 when no process holds such a stream."""
    from gateway import tokens

    pending = _STREAMS.get(session_id)
    holder = peers.holder_of(session_id)
    if pending is None and peers.is_here(holder):
        await send_json(send, 404, RpcError(jsonrpc.SESSION_NOT_FOUND, "unknown or ended SSE session").body())
        return
    if pending is not None and (pending[0] != slug or not tokens.matches(token, pending[1])):
        await send_json(send, 404, RpcError(jsonrpc.SESSION_NOT_FOUND, "unknown or ended SSE session").body())
        return
    msg = await read_message(headers, receive, send)
    if msg is None:
        return
    if pending is None:
        try:
            answer = await peers.call(holder, "legacy.message", {"slug": slug, "token": token, "headers": headers,
                                                                 "session_id": session_id, "raw": msg.raw})
        except peers.PeerUnavailable as exc:
            await send_json(send, 404, RpcError(jsonrpc.SESSION_NOT_FOUND, f"unknown or ended SSE session ({exc}): "
                                                                           "open a new stream").body())
            return
        status = answer.get("status") if answer.get("status") in (202, 404) else 404
    else:
        status = _accept(slug, token, headers, session_id, msg)
    if status == 202:
        await send_json(send, 202, None)
    else:
        await send_json(send, 404, RpcError(jsonrpc.SESSION_NOT_FOUND, "unknown or ended SSE session").body())


def _accept(slug, token, headers, session_id, msg) -> int:
    """Give a message to the task of the stream it belongs to: 202, or 404 when this process holds no such stream
    of this slug and token."""
    from gateway import tokens

    pending = _STREAMS.get(session_id)
    work = _WORK.get(session_id)
    if pending is None or work is None or pending[0] != slug or not tokens.matches(token, pending[1]):
        return 404
    channel = pending[2]
    req = relay.Request(slug=slug, token=token, headers=headers, session_id=session_id, channel=channel,
                        sse_stream=(session_id, channel))
    task = drain.track(asyncio.create_task(_answer_on_stream(req, msg, channel)))
    work.add(task)
    task.add_done_callback(work.discard)
    return 202


async def _from_a_peer(payload: dict) -> dict:
    """A message POSTed to another process for a stream this one holds."""
    try:
        msg = jsonrpc.parse(jsonrpc.dumps(payload["raw"]))  # checked again, as any message arriving here
        status = _accept(payload["slug"], payload["token"], dict(payload["headers"]), payload["session_id"], msg)
    except (KeyError, TypeError, ValueError, RpcError):
        status = 404
    return {"status": status}


peers.on("legacy.message", _from_a_peer)


async def _answer_on_stream(req, msg, channel: Channel) -> None:
    reply = await guarded(relay.handle(req, msg), msg.id)
    if reply.body is not None:
        await channel.put(reply.body)
