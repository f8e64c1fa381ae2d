"""A small HTTP/1.1 keep-alive client for the hot path: JSON-RPC POSTs to one Streamable HTTP upstream.

The general-purpose client (httpx2, under the SDK) spends about a millisecond of CPU per request on pool
bookkeeping, socket probes and stream layers, more than the gateway's policy, counters and audit together.
This client does one thing: write a POST on an idle keep-alive connection and read the answer (a
Content-Length body, a chunked body or a body up to the connection's close) within a byte limit.

What it refuses rather than guesses: header values with CR/LF (no header injection), a response header block
over 64 KiB or 100 fields, a status line that is not HTTP/1.x, a compressed body, a malformed length or chunk.
A connection is reused only after a complete, well-framed answer; never after an error, a timeout, a
cancellation or `Connection: close`; never after it has been idle long enough for a server to close it. A
request is never retried (a POST may have run).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
MAX_IDLE_CONNECTIONS = 20
IDLE_REUSE_S = 4.0  # below the common 5 s server keep-alive timeout (uvicorn, Node), so a reused one is still open
_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\x00")


class HttpError(Exception):
    """The upstream's answer could not be read as HTTP/1.1, or a request could not be written."""


class _Connection:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.idle_since = reader, writer, 0.0

    def usable(self, now: float) -> bool:
        # Bytes waiting on an idle connection mean the last answer was not what it claimed: never reuse it.
        return (not self.writer.is_closing() and not self.reader.at_eof() and not self.reader._buffer  # noqa: SLF001
                and now - self.idle_since < IDLE_REUSE_S)

    def close(self) -> None:
        self.writer.close()


class Response:
    """One answer being read. `body()` or `chunks()` must run to the end for the connection to be reused."""

    def __init__(self, conn: _Connection, status: int, headers: dict[str, str], limit: int) -> None:
        self.status, self.headers, self.limit = status, headers, limit
        self._conn = conn
        self.complete = False
        self.keep_alive = headers.get("connection", "").lower() != "close"
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise HttpError(f"upstream answered with Content-Encoding {encoding[:40]!r}, "
                            "which the gateway does not accept")
        transfer = headers.get("transfer-encoding")
        self._chunked = transfer is not None
        if transfer is not None and transfer.lower() != "chunked":
            raise HttpError(f"unsupported Transfer-Encoding {transfer[:40]!r}")
        if self._chunked and "content-length" in headers:
            self.keep_alive = False  # both framings present: read as chunked, never reuse (request smuggling)
        self._length: int | None = None
        if not self._chunked:
            declared = headers.get("content-length")
            if declared is not None:
                if not declared.isdigit():
                    raise HttpError(f"bad Content-Length {declared[:40]!r}")
                self._length = int(declared)
                if self._length > limit:
                    raise HttpError(f"answer of {self._length} bytes is over the {limit}-byte limit")
            else:
                self.keep_alive = False  # the body ends when the connection does
        self._read = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except asyncio.IncompleteReadError:
            raise HttpError("connection closed before the end of the body") from None
        except (ValueError, asyncio.LimitOverrunError):  # StreamReader: a line over its limit
            raise HttpError("malformed chunked body") from None

    async def _chunks(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        if self._chunked:
            while True:
                size_line = await reader.readline()
                if not size_line.endswith(b"\n"):
                    raise HttpError("connection closed inside a chunked body")
                size_text = size_line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise HttpError(f"bad chunk size {size_text[:20]!r}") from None
                if size == 0:
                    await self._skip_trailers()
                    self.complete = True
                    return
                self._count(size)
                data = await reader.readexactly(size + 2)
                if data[-2:] != b"\r\n":
                    raise HttpError("chunk not terminated by CRLF")
                yield data[:-2]
        elif self._length is not None:
            remaining = self._length
            while remaining:
                data = await reader.read(min(remaining, 65536))
                if not data:
                    raise HttpError("connection closed before the end of the body")
                remaining -= len(data)
                self._read += len(data)
                yield data
            self.complete = True
        else:
            while data := await reader.read(65536):
                self._count(len(data))
                yield data
            self.complete = True

    async def body(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def _count(self, size: int) -> None:
        self._read += size
        if self._read > self.limit:
            raise HttpError(f"answer larger than {self.limit} bytes")

    async def _skip_trailers(self) -> None:
        total = 0
        while True:
            line = await self._conn.reader.readline()
            total += len(line)
            if not line.endswith(b"\n") or total > MAX_HEADER_BYTES:
                raise HttpError("bad chunked trailer")
            if line in (b"\r\n", b"\n"):
                return


class Pool:
    """Keep-alive connections to one upstream origin. Belongs to one event loop."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url[:200]!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._fixed = _header_block({"host": host_header, "user-agent": "portcullis",
                                     "content-type": "application/json",
                                     "accept": "application/json, text/event-stream", **headers})
        self._idle: list[_Connection] = []

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def usable_for(url: str) -> bool:
        """False when a proxy from the environment applies: the SDK's client honours it, so the hot path must too.
        (Read once per URL: the process environment does not change under a running gateway.)"""
        parts = urlsplit(url)
        if parts.username or parts.password:
            return False  # credentials in the URL: the SDK's client turns them into Basic auth; this one does not
        proxies = getproxies()
        return parts.scheme not in proxies and "all" not in proxies or bool(proxy_bypass(parts.hostname or ""))

    @asynccontextmanager
    async def post(self, body: bytes, headers: dict[str, str], limit: int) -> AsyncIterator[Response]:
        """POST `body`; yields the response with its body unread. The caller bounds the time (cancellation
        closes the connection, which in the stateless era is how a request is cancelled)."""
        conn = await self._connection()
        head = (f"POST {self.target} HTTP/1.1\r\n".encode("latin-1") + self._fixed + _header_block(headers)
                + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
        reusable = False
        try:
            conn.writer.write(head + body)
            status, response_headers = await _read_head(conn.reader)
            response = Response(conn, status, response_headers, limit)
            yield response
            reusable = response.complete and response.keep_alive
        finally:
            if reusable:
                conn.idle_since = time.monotonic()
                if len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append(conn)
                else:
                    conn.close()
            else:
                conn.close()

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                                           limit=MAX_HEADER_BYTES)
        except OSError as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        return _Connection(reader, writer)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _header_block(headers: dict[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        name, value = str(name), str(value)
        if not name or any(c in name for c in _FORBIDDEN_IN_HEADERS + (":", " ")) or any(
                c in value for c in _FORBIDDEN_IN_HEADERS):
            raise HttpError(f"refusing to send header {name[:40]!r}: its name or value contains a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise HttpError("upstream closed the connection without answering") from None
            raise HttpError("upstream closed the connection inside the response headers") from None
        except asyncio.LimitOverrunError:
            raise HttpError(f"response headers over {MAX_HEADER_BYTES} bytes") from None
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise HttpError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        status = int(code)
        if len(lines) - 1 > MAX_HEADER_FIELDS:
            raise HttpError(f"more than {MAX_HEADER_FIELDS} response header fields")
        if 100 <= status < 200:
            if status == 101:
                raise HttpError("upstream switched protocols")
            continue  # 100 Continue, 103 Early Hints: the real answer follows
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError(f"malformed response header line {line[:60]!r}")
            key = name.lower()
            value = value.strip()
            if key in headers:
                if key in ("content-length", "transfer-encoding"):
                    raise HttpError(f"duplicate {name} header")
                headers[key] += ", " + value
            else:
                headers[key] = value
        if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
            headers["connection"] = "close"
        return status, headers
