"""Serve Portcullis with uvicorn (httptools, uvloop) instead of daphne: `PORTCULLIS_SERVER=uvicorn`.

The same command line as config/serve.py (-b, -p, -v and the application path; `make run SERVER=uvicorn`), the same
application (dashboard, websockets, MCP endpoint) and the same guarantees, enforced here instead of in Twisted:

- request heads: a connection's request line and headers must arrive within PORTCULLIS_HEADER_DEADLINE_S (of its
  opening, or of its previous response on a kept-alive connection); one client address holds at most
  PORTCULLIS_CONNECTIONS_PER_CLIENT connections;
- request bodies: the MCP endpoint reads its body within the limit and the deadline itself (gateway/edge/http_io.py);
  every other HTTP request's body is read here first, within PORTCULLIS_MAX_BODY_BYTES (413, as it streams in) and
  PORTCULLIS_BODY_DEADLINE_S (408), before Django sees it;
- the access log (one line per HTTP request on stdout) never records query strings; X-Forwarded-* headers are not
  trusted (as daphne);
- SIGTERM drains (gateway/edge/drain.py), and the start-up work runs when the server listens.

Why it exists: per tools/call, Twisted, daphne and Channels' HTTP consumer cost more CPU than the gateway's own work
(docs/ARCHITECTURE.md, "Performance"); httptools parses in C. daphne stays the default.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def options(argv: list[str]) -> tuple[str, int, str, int]:
    """(host, port, application, verbosity) from daphne-style arguments."""
    host, port = "127.0.0.1", 8000
    app, verbosity = "config.asgi:application", 1
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-b", "--bind") and i + 1 < len(argv):
            host, i = argv[i + 1], i + 2
        elif arg in ("-p", "--port") and i + 1 < len(argv):
            port, i = int(argv[i + 1]), i + 2
        elif arg in ("-v", "--verbosity") and i + 1 < len(argv):
            verbosity, i = int(argv[i + 1]), i + 2
        elif arg.startswith("--bind="):
            host, i = arg.split("=", 1)[1], i + 1
        elif arg.startswith("--port="):
            port, i = int(arg.split("=", 1)[1]), i + 1
        elif arg.startswith("-"):
            raise SystemExit(f"PORTCULLIS_SERVER=uvicorn takes -b, -p, -v and the application; not {arg!r}")
        else:
            app, i = arg, i + 1
    return host, port, app, verbosity


class GuardedHttpTools(HttpToolsProtocol):
    """httptools' protocol with the head deadline and the per-address connection cap."""

    head_deadline = 10.0
    per_client = 200
    open_by_client: dict[str, set] = {}

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        peer = self.client[0] if self.client else ""
        # A connection upgraded to a websocket leaves this protocol without connection_lost: count live ones only.
        held = {p for p in self.open_by_client.get(peer, ()) if not p.transport.is_closing()}
        held.add(self)
        self.open_by_client[peer] = held
        if len(held) > self.per_client:
            transport.abort()  # this address holds enough connections already
            return
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        peer = self.client[0] if self.client else ""
        held = self.open_by_client.get(peer)
        if held is not None:
            held.discard(self)
            if not held:
                self.open_by_client.pop(peer, None)
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # a kept-alive connection: the next request's head has the same deadline

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_deadline, self._too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:  # no request is being served on it
            self.transport.abort()


class Edge:
    """In front of the application: a non-MCP request's body read within the limit and the deadline before the
    application sees it; one access-log line per HTTP request, without the query string (written here, not through
    `logging`: on the hot path the logging module cost more than the line)."""

    def __init__(self, app, access_log) -> None:
        self.app, self.access_log = app, access_log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        if self.access_log is not None:
            inner = send

            async def send(message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await inner(message)

        try:
            if scope["path"].startswith("/mcp/"):  # the endpoint reads its body within the limits itself
                await self.app(scope, receive, send)
            else:
                await self._read_then_call(scope, receive, send)
        finally:
            if self.access_log is not None:
                client = scope.get("client")
                self.access_log(f'{client[0] if client else "-"} - "{scope["method"]} {scope["path"]}'
                                f'{"?[query omitted]" if scope.get("query_string") else ""} '
                                f'HTTP/{scope["http_version"]}" {status or "-"}\n')

    async def _read_then_call(self, scope, receive, send) -> None:
        from gateway.edge.http_io import read_body, send_json

        declared = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
                    if k.lower() == b"content-length"}
        body = await read_body(declared, receive)  # within PORTCULLIS_MAX_BODY_BYTES and _BODY_DEADLINE_S
        if isinstance(body, tuple):
            status, answer = body
            await send_json(send, status, answer, [("connection", "close")])
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class DrainingServer(uvicorn.Server):
    """SIGTERM drains as under daphne: new work refused, calls in flight finish within PORTCULLIS_DRAIN_S."""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        from gateway.edge.startup import on_first_request

        asyncio.ensure_future(on_first_request())

    def handle_exit(self, sig, frame) -> None:
        if sig == signal.SIGTERM and not self.should_exit:
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(self._begin_drain)
            return
        super().handle_exit(sig, frame)

    def _begin_drain(self) -> None:
        from gateway.edge import drain

        def stop() -> None:
            self.should_exit = True

        asyncio.ensure_future(drain.drain(stop=stop))


def access_line_writer(verbosity: int):
    """What writes one access-log line (stdout, flushed per line, as daphne's), or None at verbosity 0."""
    if verbosity < 1:
        return None
    out = sys.stdout

    def write(line: str) -> None:
        out.write(line)
        out.flush()

    return write


def run(argv: list[str]) -> None:
    from config import settings  # the same values the application reads (a bad one stops the start, named)

    host, port, app_path, verbosity = options(argv)
    GuardedHttpTools.head_deadline = settings.PORTCULLIS_HEADER_DEADLINE_S
    GuardedHttpTools.per_client = settings.PORTCULLIS_CONNECTIONS_PER_CLIENT
    config = uvicorn.Config(app_path, host=host, port=port, loop="uvloop", http=GuardedHttpTools, ws="websockets",
                            lifespan="off", log_config=None, access_log=False, proxy_headers=False,
                            server_header=False, ws_max_size=settings.PORTCULLIS_MAX_BODY_BYTES)
    config.load()
    config.loaded_app = Edge(config.loaded_app, access_line_writer(verbosity))
    DrainingServer(config).run()
