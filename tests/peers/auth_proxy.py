"""A test-only reverse proxy that adds `Authorization: Bearer <token>` and changes nothing else.

Some clients cannot send headers (the MCP conformance suite among them); the gateway needs a grant token on
every request. This proxy sits in front of the gateway and forwards each request as it came: method, path,
query string, body, and every header (Host and Origin included, byte for byte: the DNS-rebinding checks depend
on them), minus hop-by-hop headers; any Authorization the client sent is replaced. Responses stream back chunk
by chunk as they arrive (SSE), with their status and headers; when the client goes away, the upstream request
is closed too, so the gateway sees the disconnect.

It uses httpx2's bare transport, not a client: a client would add Accept, User-Agent, Accept-Encoding and
cookies of its own. Run:

    AUTH_PROXY_TOKEN=pcl_... python -m tests.peers.auth_proxy --port 9000 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import httpx2
import uvicorn

# RFC 9110 §7.6.1: these describe one connection, not the message; never forwarded in either direction.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                        b"upgrade", b"proxy-authorization", b"proxy-authenticate"})
TIMEOUTS = {"connect": 10.0, "read": None, "write": 30.0, "pool": 30.0}  # read: SSE streams may idle for long


class ClientGone(Exception):
    pass


class AuthProxy:
    def __init__(self, upstream: str, token: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.authorization = f"Bearer {token}".encode("latin-1")
        self.transport: httpx2.AsyncHTTPTransport | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.transport = httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=200))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.transport is not None:
                    await self.transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP and k.lower() != b"authorization"]
        headers.append((b"authorization", self.authorization))
        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        url = self.upstream + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        body_done = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body"):
                    body_done.set()
                    return

        if not has_body:  # GET/DELETE: nothing to forward, but the (empty) request body is still consumed
            async for _ in body():
                pass
        request = httpx2.Request(scope["method"], httpx2.URL(url), headers=headers,
                                 content=body() if has_body else None, extensions={"timeout": TIMEOUTS})
        forward = asyncio.create_task(self._forward(request, send))
        try:
            if has_body:  # receive() is the body's until it is all read; only then can it report a disconnect
                await _first_of(forward, asyncio.create_task(body_done.wait()))
            if not forward.done():
                await _first_of(forward, asyncio.create_task(_wait_disconnect(receive)))
            if not forward.done():  # the client left: close the upstream request so the gateway sees it too
                forward.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientGone):
                    await forward
                return
            forward.result()
        except ClientGone:
            return
        finally:
            if not forward.done():  # this handler itself was cancelled (server shutdown)
                forward.cancel()

    async def _forward(self, request: httpx2.Request, send) -> None:
        assert self.transport is not None
        try:
            response = await self.transport.handle_async_request(request)
        except httpx2.TransportError as exc:
            payload = f"auth proxy: upstream unreachable: {exc!r}".encode()
            await send({"type": "http.response.start", "status": 502,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return
        try:
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _first_of(task: asyncio.Task, other: asyncio.Task) -> None:
    """Wait for either; `other` is a helper and never outlives the wait."""
    try:
        await asyncio.wait({task, other}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        other.cancel()


async def _wait_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="scheme://host:port of the gateway; paths are kept")
    args = parser.parse_args(argv)
    token = os.environ.get("AUTH_PROXY_TOKEN", "")
    if not token:  # never on the command line: argv is visible to every user of the machine
        sys.exit("AUTH_PROXY_TOKEN is not set")
    app = AuthProxy(args.upstream, token)
    uvicorn.run(app, host=args.host, port=args.port, lifespan="on", http="h11", log_level="warning",
                access_log=False, server_header=False, date_header=False, proxy_headers=False)


if __name__ == "__main__":
    main()
