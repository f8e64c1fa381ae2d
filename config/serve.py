"""Run daphne the way Portcullis needs it.

- The access log never records query strings: a token sent in a URL by mistake (the gateway refuses it)
  must not land in the log either.
- SIGTERM drains: calls in flight finish (within PORTCULLIS_DRAIN_S) before the process stops.
- Request bodies are limited while they arrive. Twisted (under daphne) takes a whole body before the
  application sees it, so the gateway's own check would come after the bytes were stored. Here an oversized
  body is discarded as it streams in (declared by Content-Length or not, chunked or not) and answered 413;
  a body that has not fully arrived within the deadline is cut off.

Usage is the same as daphne's: python -m config.serve -b 127.0.0.1 -p 8000 config.asgi:application

PORTCULLIS_SERVER=uvicorn serves the same application with uvicorn instead (config/serve_uvicorn.py), with the same
command line and the same limits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import uvloop

# daphne creates its event loop when it is imported: the loop policy must be set first. uvloop runs the same
# asyncio code with a fraction of the event loop's CPU per request (measured with `python -m bench`).
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from daphne import cli  # noqa: E402


class QuerylessAccessLog(cli.AccessLogGenerator):
    def __call__(self, protocol, action, details):
        path = details.get("path")
        if isinstance(path, str) and "?" in path:
            details = {**details, "path": path.split("?", 1)[0] + "?[query omitted]"}
        super().__call__(protocol, action, details)


class _Discard:
    """Where an oversized body goes: nowhere."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args) -> None:
        pass

    def read(self, *args) -> bytes:
        return b""

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


def limit_request_bodies(limit: int, deadline: float) -> None:
    """Bodies over `limit` bytes are discarded as they stream in; one still arriving after `deadline` s is cut off."""
    from daphne.http_protocol import WebRequest
    from twisted.internet import reactor
    from twisted.web import http

    def got_length(self, length):
        self.portcullis_seen, self.portcullis_too_large = 0, length is not None and length > limit
        self.portcullis_deadline = reactor.callLater(deadline, _cut_off, self)
        if self.portcullis_too_large:
            self.content = _Discard()
        else:
            http.Request.gotLength(self, length)

    def handle_chunk(self, data):
        self.portcullis_seen += len(data)
        if not self.portcullis_too_large and self.portcullis_seen > limit:
            self.portcullis_too_large = True
            self.content.close()
            self.content = _Discard()
        self.content.write(data)

    original_process = WebRequest.process

    def process(self):
        deadline = getattr(self, "portcullis_deadline", None)
        if deadline is not None and deadline.active():
            deadline.cancel()
        if getattr(self, "portcullis_too_large", False):
            _answer(self, 413, f"body larger than {limit} bytes")
            return
        original_process(self)

    WebRequest.gotLength = got_length
    WebRequest.handleContentChunk = handle_chunk
    WebRequest.process = process


def limit_request_heads(deadline: float, per_client: int) -> None:
    """Slow-loris defence for the request head: a connection whose request line and headers are not complete
    within `deadline` s of its opening (or of its previous request's end, on a kept-alive connection) is closed;
    a client address holding `per_client` connections has its next ones closed at once. Behind a reverse proxy
    every connection comes from the proxy's address: raise `per_client` there (docs/DEPLOYMENT.md)."""
    from twisted.internet import reactor
    from twisted.web import http

    # Per client address, its open connections' transports; counted when one more arrives (a websocket takes the
    # transport over from the HTTP channel, so the channel's connectionLost never says when those end).
    open_by_client: dict[str, set] = {}
    original_made, original_lost = http.HTTPChannel.connectionMade, http.HTTPChannel.connectionLost
    original_heads, original_done = http.HTTPChannel.allHeadersReceived, http.HTTPChannel.requestDone

    def arm(channel) -> None:
        disarm(channel)
        channel.portcullis_head_timer = reactor.callLater(deadline, _head_too_slow, channel)

    def disarm(channel) -> None:
        timer = getattr(channel, "portcullis_head_timer", None)
        if timer is not None and timer.active():
            timer.cancel()

    def made(self):
        peer = getattr(self.transport.getPeer(), "host", "")
        held = {t for t in open_by_client.get(peer, ()) if getattr(t, "connected", False)}
        held.add(self.transport)
        open_by_client[peer] = held
        original_made(self)
        if len(held) > per_client:
            self.transport.abortConnection()  # this address holds enough connections already
            return
        arm(self)

    def lost(self, reason):
        disarm(self)
        peer = getattr(self.transport.getPeer(), "host", "") if self.transport is not None else None
        held = open_by_client.get(peer)
        if held is not None:
            held.discard(self.transport)
            if not held:
                open_by_client.pop(peer, None)
        original_lost(self, reason)

    def heads(self):
        disarm(self)
        original_heads(self)

    def done(self, request):
        original_done(self, request)
        if self.transport is not None:
            arm(self)  # a kept-alive connection: the next request's head has the same deadline

    http.HTTPChannel.connectionMade = made
    http.HTTPChannel.connectionLost = lost
    http.HTTPChannel.allHeadersReceived = heads
    http.HTTPChannel.requestDone = done


def _head_too_slow(channel) -> None:
    if channel.transport is not None:
        channel.transport.abortConnection()  # the request head did not arrive in time


def skip_unused_request_work() -> None:
    """Per-request work of Twisted's that the gateway never uses, measured with `python -m bench --profile`:
    parsing POST bodies as HTML forms (its Content-Type parser builds an email message, ~5 % of the gateway's
    CPU per call; daphne hands the raw body to the application) and formatting a second, Twisted-style access
    line that nothing reads (daphne writes the access log, without query strings)."""
    from daphne.http_protocol import HTTPFactory, WebRequest

    original_init = WebRequest.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = init
    HTTPFactory.log = lambda self, request: None


def drain_on_sigterm() -> None:
    """SIGTERM drains (gateway/edge/drain.py) instead of stopping at once: new work is refused, calls in flight get
    PORTCULLIS_DRAIN_S to finish, then the reactor stops. The start-up work (and the heartbeat) runs as soon as
    the server listens, not only at the first MCP request, so peers see this process from its start."""
    import signal

    from twisted.internet import reactor

    def begin_drain():
        from gateway.edge import drain

        asyncio.ensure_future(drain.drain(stop=reactor.stop))

    def on_term(signum, frame):
        reactor.callFromThread(begin_drain)

    def start_up():
        from gateway.edge.startup import on_first_request

        asyncio.ensure_future(on_first_request())
        # Twisted installs its own handlers when the reactor starts: this one goes in after them.
        reactor.callLater(0, signal.signal, signal.SIGTERM, on_term)

    reactor.callWhenRunning(start_up)


def _answer(request, status: int, message: str) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32005, "message": message}}).encode()
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", str(len(body)).encode())
    request.setHeader(b"connection", b"close")
    request.write(body)
    request.finish()


def _cut_off(request) -> None:
    if not request.finished and request.channel is not None:
        request.channel.transport.loseConnection()  # the body did not arrive in time


def served_url(argv: list[str]) -> str:
    """http://<bind>:<port> from daphne's own options (-b/--bind, -p/--port; daphne's defaults otherwise)."""
    host, port = "127.0.0.1", "8000"
    for i, arg in enumerate(argv):
        for short, long_, current in (("-b", "--bind", "host"), ("-p", "--port", "port")):
            value = None
            if arg in (short, long_) and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(long_ + "="):
                value = arg.split("=", 1)[1]
            if value is not None:
                host, port = (value, port) if current == "host" else (host, value)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a wildcard bind: the local address
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("PORTCULLIS_SERVED_URL", served_url(argv))  # before settings: the public URL's default
    from config.env import ConfigError

    try:
        from config import settings  # the same values the application reads (a bad one stops the start, named)
    except ConfigError as exc:  # a bad environment value: say which variable, not a traceback (as manage.py)
        sys.stderr.write(f"configuration error: {exc}\n")
        sys.exit(2)

    if settings.PORTCULLIS_SERVER == "uvicorn":
        from config import serve_uvicorn

        serve_uvicorn.run(argv)
        return
    cli.AccessLogGenerator = QuerylessAccessLog  # the CLI builds its access log from this name
    limit_request_bodies(settings.PORTCULLIS_MAX_BODY_BYTES, settings.PORTCULLIS_BODY_DEADLINE_S)
    limit_request_heads(settings.PORTCULLIS_HEADER_DEADLINE_S, settings.PORTCULLIS_CONNECTIONS_PER_CLIENT)
    skip_unused_request_work()
    drain_on_sigterm()
    cli.CommandLineInterface().run(argv)


if __name__ == "__main__":
    main()
