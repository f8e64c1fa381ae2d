"""The HTTP plumbing both MCP transports share: the checks every request passes (Host and Origin, which Django's
ALLOWED_HOSTS and Channels' origin validator do not cover for a raw HTTP app; no token in the query string;
duplicated routing headers), the bearer token, the body read within its size limit and deadline, JSON and SSE
answers, and the guard that turns any failure into a JSON-RPC error.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import DatabaseError
from django.http.request import split_domain_port, validate_host

from gateway.edge import drain
from gateway.edge.startup import on_first_request
from gateway.grants import AuthFailure
from gateway.protocol import jsonrpc, relay
from gateway.protocol.exchange import Reply
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.streams import KEEPALIVE

log = logging.getLogger("portcullis.endpoint")

KEEPALIVE_S = 15  # an SSE comment this often keeps idle streams open through proxies
TOKEN_QUERY_KEYS = frozenset({"token", "access_token", "auth", "authorization", "api_key", "apikey", "key"})


async def preflight(scope, send) -> dict[str, str] | None:
    """Start-up work, then the HTTP checks every MCP request passes; None when already answered."""
    if scope["type"] != "http":
        return None
    if drain.draining():  # nothing is done: a balancer may send it to another process
        await send_json(send, 503, RpcError(jsonrpc.GATEWAY_UNAVAILABLE, "this gateway process is stopping; "
                                                                         "send the request again").body(),
                        [("retry-after", "1"), ("connection", "close")])
        return None
    await on_first_request()
    headers = headers_of(scope)
    early = check_http(scope, headers)
    if early is not None:
        await send_json(send, *early)
        return None
    return headers


async def pump(feed: asyncio.Queue, gone: asyncio.Task, send) -> bool:
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


async def wait_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def start_sse(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]})


async def read_message(headers, receive, send) -> jsonrpc.Message | None:
    """The request's JSON-RPC message, or None when the body was refused (the answer is already sent)."""
    body = await read_body(headers, receive)
    if isinstance(body, tuple):
        await send_json(send, *body)
        return None
    try:
        return jsonrpc.parse(body)
    except RpcError as err:
        await send_json(send, err.http_status, err.body())
        return None


async def guarded(coro, msg_id) -> Reply:
    try:
        return await coro
    except (AuthFailure, RpcError, DatabaseError) as exc:
        return relay.refused(exc, msg_id)
    except Exception:
        log.exception("internal error in the MCP endpoint")
        return Reply(500, RpcError(jsonrpc.INTERNAL_ERROR, "internal gateway error; see the gateway log",
                                         id=msg_id).body())


def headers_of(scope) -> dict[str, str]:
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


def check_http(scope, headers) -> tuple | None:
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


def bearer_token(headers) -> str:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def read_body(headers, receive) -> bytes | tuple:
    limit = settings.PORTCULLIS_MAX_BODY_BYTES
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return 413, RpcError(jsonrpc.PAYLOAD_TOO_LARGE, f"body larger than {limit} bytes").body()
    chunks, size = [], 0
    try:
        async with asyncio.timeout(settings.PORTCULLIS_BODY_DEADLINE_S):
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
        deadline = settings.PORTCULLIS_BODY_DEADLINE_S
        return 408, RpcError(jsonrpc.INVALID_REQUEST, f"body not received within {deadline} s").body()


async def send_reply(send, reply: Reply) -> None:
    await send_json(send, reply.status, reply.body, reply.headers)


async def send_json(send, status: int, body: dict | None, headers: list[tuple[str, str]] | None = None) -> None:
    payload = jsonrpc.dumps(body) if body is not None else b""
    raw_headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")] if body is not None else []
    raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or [])]
    raw_headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
