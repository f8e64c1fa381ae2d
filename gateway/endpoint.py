"""The agent-facing MCP endpoint, /mcp/<slug>/: a plain ASGI app under Channels' URLRouter.

It owns the HTTP concerns the MCP transports leave to the server: Host and Origin checks (Django's
ALLOWED_HOSTS and Channels' origin validator do not cover a raw HTTP app), the bearer token (never from
the query string), content types, the body size limit and read deadline. Protocol work is in relay.py.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import DatabaseError
from django.http.request import split_domain_port, validate_host
from django.utils import timezone

from gateway import approvals, dbthreads, jsonrpc, ratelimit, relay
from gateway.agent_sessions import REGISTRY
from gateway.audit import mark_interrupted
from gateway.jsonrpc import RpcError
from gateway.streams import KEEPALIVE, Channel

log = logging.getLogger("portcullis.endpoint")

BODY_DEADLINE_S = 30  # a body that has not fully arrived by then is cut off (slow-loris uploads)
KEEPALIVE_S = 15  # an SSE comment this often keeps idle streams open through proxies
TOKEN_QUERY_KEYS = frozenset({"token", "access_token", "auth", "authorization", "api_key", "apikey", "key"})
MAINTENANCE_EVERY_S = 600  # sweep ended counter windows and overdue approvals this often
_started = False
_maintenance: asyncio.Task | None = None


async def _on_first_request() -> None:
    """daphne sends no lifespan events, so process start-up work runs before the first MCP request."""
    global _started, _maintenance
    if _started:
        return
    try:
        count = await dbthreads.run(mark_interrupted, timezone.now())
    except DatabaseError as exc:  # tried again before the next request; this one is answered on its own merits
        log.error("start-up work postponed, the database is unavailable: %s", exc)
        return
    _started = True
    if count:
        log.warning("marked %d audit rows left in flight by dead gateway processes as interrupted", count)
    _maintenance = asyncio.create_task(_maintain(), name="portcullis:maintenance")


def _housekeeping() -> None:
    now = timezone.now()
    ratelimit.sweep(int(now.timestamp()))
    approvals.expire_overdue(now)


async def _maintain() -> None:
    """Counter rows of ended windows and overdue approvals would otherwise only ever accumulate."""
    while True:
        try:
            await dbthreads.run(_housekeeping)
        except Exception:  # a failed sweep is retried next time; it never affects calls
            log.exception("housekeeping failed")
        await asyncio.sleep(MAINTENANCE_EVERY_S)


async def preflight(scope, send) -> dict[str, str] | None:
    """Start-up work, then the HTTP checks every MCP request passes; None when already answered."""
    if scope["type"] != "http":
        return None
    await _on_first_request()
    headers = _headers(scope)
    early = _check_http(scope, headers)
    if early is not None:
        await _send(send, *early)
        return None
    return headers


class McpEndpoint:
    async def __call__(self, scope, receive, send) -> None:
        headers = await preflight(scope, send)
        if headers is None:
            return
        slug = scope["url_route"]["kwargs"]["slug"]
        token = _bearer(headers)
        req = relay.Request(slug=slug, token=token, headers=headers, session_id=headers.get("mcp-session-id"))
        method = scope["method"]
        if method == "POST":
            await self._post(req, headers, receive, send)
        elif method == "DELETE":
            reply = await guarded(relay.end_session(req), None)
            await _send_reply(send, reply)
        elif method == "GET":
            await self._get(req, headers, receive, send)
        else:
            await _send(send, 405, {"error": f"method {method} not allowed"}, [("allow", "POST, GET, DELETE")])

    async def _post(self, req, headers, receive, send) -> None:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            await _send(send, 415, RpcError(jsonrpc.INVALID_REQUEST, "Content-Type must be application/json").body())
            return
        accept = headers.get("accept", "")
        if accept and "application/json" not in accept and "*/*" not in accept:
            await _send(send, 406, RpcError(jsonrpc.INVALID_REQUEST,
                                            "Accept must include application/json").body())
            return
        msg = await read_message(headers, receive, send)
        if msg is None:
            return
        if not req.token:
            err = RpcError(jsonrpc.UNAUTHORIZED, "missing bearer token: send Authorization: Bearer <grant token>",
                           id=msg.id)
            await _send(send, 401, err.body(), [("www-authenticate", 'Bearer realm="portcullis"')])
            return
        if "text/event-stream" in accept and msg.is_request:
            req.channel = _channel_for(req)
        await _answer(req, msg, receive, send)

    async def _get(self, req, headers, receive, send) -> None:
        """The session era's server stream: notifications and server requests not tied to a POST; with
        Last-Event-ID, the rest of an earlier stream of the same session (a POST's answer or a GET stream)."""
        if "text/event-stream" not in headers.get("accept", ""):
            await _send(send, 406, RpcError(jsonrpc.INVALID_REQUEST, "Accept must include text/event-stream").body())
            return
        last_event_id = headers.get("last-event-id") or None
        try:
            if not req.token:
                raise RpcError(jsonrpc.UNAUTHORIZED, "missing bearer token")
            stream, feed = await relay.open_get_stream(req, last_event_id)
        except (RpcError, relay.AuthFailure, DatabaseError) as exc:
            err = relay.refusal_of(exc)
            await _send(send, err.http_status, err.body(), relay.RETRY_LATER if isinstance(exc, DatabaseError) else [])
            return
        await _start_sse(send)
        # daphne sends the status line and headers only with the first body chunk: send one now, or the agent
        # cannot tell its stream is open until the first message or keep-alive arrives.
        opening = stream.priming() if last_event_id is None else None
        await send({"type": "http.response.body", "body": opening or KEEPALIVE, "more_body": True})
        gone = asyncio.create_task(_wait_disconnect(receive))
        try:
            await _pump(feed, gone, send)
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
    """Plain JSON when the answer is all there is; SSE when something must reach the agent first."""
    channel = req.channel
    task = asyncio.create_task(guarded(relay.handle(req, msg), msg.id))
    # Stateless era: closing the response stream is the cancellation. Session era: a disconnect is not one;
    # the call finishes upstream and is audited.
    cancel_on_leave = req.session_id is None and relay.is_modern(msg)
    gone = asyncio.create_task(_wait_disconnect(receive))
    feed = channel.feed if channel is not None else None
    first = asyncio.create_task(feed.get()) if feed is not None else None
    streaming = False
    try:
        done, _ = await asyncio.wait({task, gone} | ({first} if first else set()),
                                     return_when=asyncio.FIRST_COMPLETED)
        if first in done and first.result() is None:  # the session ended before anything was sent
            done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            await _send_reply(send, task.result())
        elif gone in done:
            if cancel_on_leave:
                task.cancel()
        else:
            streaming = True
            await _stream(channel, feed, first.result(), task, gone, send, cancel_on_leave)
    finally:
        gone.cancel()
        if first is not None:
            first.cancel()
        if channel is not None and not streaming:
            channel.discard()  # answered as plain JSON, or the agent left before any event id reached it


async def _stream(channel, feed, first: bytes, task, gone, send, cancel_on_leave: bool) -> None:
    """A POST answered as SSE: what the channel sends, then the final response (recorded by the channel
    itself when the call ends, so a resumable stream still gets it after the agent has left)."""
    await _start_sse(send)
    await send({"type": "http.response.body", "body": (channel.priming() or b"") + first, "more_body": True})
    task.add_done_callback(lambda done: channel.finish(_final_body(done)))
    ended = False
    try:
        ended = await _pump(feed, gone, send)
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


async def _pump(feed: asyncio.Queue, gone: asyncio.Task, send) -> bool:
    """Write a feed's frames onto an open SSE response until it ends (True) or the client leaves (False)."""
    try:
        while True:
            getter = asyncio.create_task(feed.get())
            done, _ = await asyncio.wait({getter, gone}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                frame = getter.result()
                if frame is None:
                    await send({"type": "http.response.body", "body": b""})
                    return True
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                continue
            getter.cancel()
            if gone in done:
                return False
            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
    finally:
        gone.cancel()


async def _wait_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _start_sse(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]})


async def read_message(headers, receive, send) -> jsonrpc.Message | None:
    """The request's JSON-RPC message, or None when the body was refused (the answer is already sent)."""
    body = await _read_body(headers, receive)
    if isinstance(body, tuple):
        await _send(send, *body)
        return None
    try:
        return jsonrpc.parse(body)
    except RpcError as err:
        await _send(send, err.http_status, err.body())
        return None


async def guarded(coro, msg_id) -> relay.Reply:
    try:
        return await coro
    except RpcError as err:
        return relay.error_reply(RpcError(err.code, err.message, err.data, msg_id))
    except DatabaseError as exc:
        return relay.error_reply(relay.database_unavailable(exc, msg_id), relay.RETRY_LATER)
    except Exception:
        log.exception("internal error in the MCP endpoint")
        return relay.Reply(500, RpcError(jsonrpc.INTERNAL_ERROR, "internal gateway error; see the gateway log",
                                         id=msg_id).body())


def _headers(scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in out and name in ("authorization", "mcp-session-id", "mcp-method", "mcp-name",
                                    "mcp-protocol-version", "host", "origin", "content-length"):
            out[name] = "\x00duplicate"  # two copies of a routing or auth header: neither is trusted
        else:
            out[name] = value
    return out


def _check_http(scope, headers) -> tuple | None:
    host = headers.get("host", "")
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return 421, {"error": f"unknown Host {host[:100]!r}"}
    origin = headers.get("origin")
    if origin is not None and origin not in settings.PORTCULLIS_ALLOWED_ORIGINS:
        # DNS rebinding / cross-site requests from a browser: refused before anything else (spec: 403).
        return 403, RpcError(jsonrpc.FORBIDDEN, "Origin not allowed").body()
    query = scope.get("query_string", b"").decode("latin-1")
    if query and any(key.lower() in TOKEN_QUERY_KEYS for key, _ in parse_qsl(query, keep_blank_values=True)):
        # Tokens in URLs end up in logs and browser history; the value is never read or logged.
        return 400, RpcError(jsonrpc.INVALID_REQUEST,
                             "a token in the query string is refused: send Authorization: Bearer <token>").body()
    if headers.get("authorization", "").startswith("\x00") or headers.get("mcp-session-id", "").startswith("\x00"):
        return 400, RpcError(jsonrpc.INVALID_REQUEST, "duplicated Authorization or Mcp-Session-Id header").body()
    return None


def _bearer(headers) -> str:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _read_body(headers, receive) -> bytes | tuple:
    limit = settings.PORTCULLIS_MAX_BODY_BYTES
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return 413, RpcError(jsonrpc.PAYLOAD_TOO_LARGE, f"body larger than {limit} bytes").body()
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_DEADLINE_S):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return 400, {"error": "client disconnected"}
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:  # chunked uploads: stop reading at the limit
                    return 413, RpcError(jsonrpc.PAYLOAD_TOO_LARGE, f"body larger than {limit} bytes").body()
                chunks.append(chunk)
                if not message.get("more_body"):
                    return b"".join(chunks)
    except TimeoutError:
        return 408, RpcError(jsonrpc.INVALID_REQUEST, f"body not received within {BODY_DEADLINE_S} s").body()


async def _send_reply(send, reply: relay.Reply) -> None:
    await _send(send, reply.status, reply.body, reply.headers)


async def _send(send, status: int, body: dict | None, headers: list[tuple[str, str]] | None = None) -> None:
    payload = jsonrpc.dumps(body) if body is not None else b""
    raw_headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")] if body is not None else []
    raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or [])]
    raw_headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})

