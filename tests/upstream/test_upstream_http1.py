"""The hot path's HTTP/1.1 client (gateway/upstream/http1.py) against a real socket server that answers with
exactly the bytes each case needs: framing, reuse, limits and refusals."""

from __future__ import annotations

import asyncio

import pytest

from gateway.upstream import http1
from gateway.upstream.http1 import HttpError, Pool


class Upstream:
    """A TCP server: each accepted connection reads requests and answers with the scripted raw responses."""

    def __init__(self, answers: list[bytes], close_after_each: bool = False) -> None:
        self.answers = list(answers)
        self.close_after_each = close_after_each
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/mcp"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if answer == b"HANG":
                    await reader.read()  # until the client closes
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_each or b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            writer.close()


def json_answer(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


def chunked(*parts: bytes, content_type: str = "text/event-stream") -> bytes:
    out = f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n".encode()
    for part in parts:
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


async def post(pool: Pool, body: bytes = b'{"x":1}', limit: int = 1 << 20) -> tuple[int, str, bytes, bool]:
    async with pool.post(body, {"mcp-method": "tools/call"}, limit) as response:
        data = await response.body()
        return response.status, response.content_type, data, response.complete


pytestmark = pytest.mark.asyncio


async def test_content_length_answer_and_the_request_it_sent():
    async with Upstream([json_answer(b'{"ok":true}')]) as up:
        pool = Pool(up.url, {"authorization": "Bearer upstream-secret"})
        status, kind, data, complete = await post(pool)
        assert (status, kind, data, complete) == (200, "application/json", b'{"ok":true}', True)
        head, _, body = up.requests[0].partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /mcp HTTP/1.1"
        assert {"authorization: Bearer upstream-secret", "mcp-method: tools/call", "content-length: 7",
                "content-type: application/json"} <= set(lines)
        assert body == b'{"x":1}'


async def test_keep_alive_connection_is_reused():
    async with Upstream([json_answer(b"1"), chunked(b"data: 2\n\n"), json_answer(b"3")]) as up:
        pool = Pool(up.url, {})
        assert [(await post(pool))[2] for _ in range(3)] == [b"1", b"data: 2\n\n", b"3"]
        assert up.connections == 1


async def test_connection_close_and_http10_are_not_reused():
    close = json_answer(b"1", "connection: close\r\n")
    http10 = b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n2"
    async with Upstream([close]) as up:
        pool = Pool(up.url, {})
        assert (await post(pool))[2] == b"1"
        up.answers = [http10]
        assert (await post(pool))[2] == b"2"
        up.answers = [json_answer(b"3")]
        assert (await post(pool))[2] == b"3"
        assert up.connections == 3


async def test_body_until_close_when_no_length_is_given():
    async with Upstream([b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{}"]) as up:
        assert (await post(Pool(up.url, {})))[2:] == (b"{}", True)


async def test_idle_connection_past_reuse_window_is_replaced(monkeypatch):
    async with Upstream([json_answer(b"1"), json_answer(b"2")]) as up:
        pool = Pool(up.url, {})
        await post(pool)
        monkeypatch.setattr(http1, "IDLE_REUSE_S", 0.0)
        await post(pool)
        assert up.connections == 2


async def test_connection_closed_by_server_while_idle_is_not_reused():
    async with Upstream([json_answer(b"1")]) as up:
        pool = Pool(up.url, {})
        await post(pool)
        await asyncio.wait_for(up.closed.wait(), 5)  # the server ran out of answers and closed it
        await asyncio.sleep(0.05)
        up.answers = [json_answer(b"2")]
        up.closed.clear()
        assert (await post(pool))[2] == b"2"
        assert up.connections == 2


@pytest.mark.parametrize("answer, message", [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx", "duplicate content-length"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 1\r\n\r\nx", "Content-Encoding 'gzip'"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n", "chunk not terminated"),
    (b"HTTP/1.1 200 OK\r\n bad-fold: x\r\ncontent-length: 0\r\n\r\n", "malformed response header line"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nabc", "closed before the end of the body"),
    (b"HTTP/1.1 200 OK\r\ncontent-le", "inside the response headers"),
    (b"", "without answering"),
])
async def test_malformed_answers_are_refused_and_the_connection_dropped(answer, message):
    async with Upstream([answer], close_after_each=True) as up:
        pool = Pool(up.url, {})
        with pytest.raises(HttpError, match=message):
            await asyncio.wait_for(post(pool), 5)
        assert not pool._idle  # never kept after an error


async def test_interim_100_continue_is_skipped():
    async with Upstream([b"HTTP/1.1 100 Continue\r\n\r\n" + json_answer(b"{}")]) as up:
        assert (await post(Pool(up.url, {})))[:3] == (200, "application/json", b"{}")


async def test_answer_over_the_limit_is_refused_declared_or_chunked():
    async with Upstream([json_answer(b"x" * 100), chunked(b"y" * 60, b"y" * 60)]) as up:
        pool = Pool(up.url, {})
        with pytest.raises(HttpError, match="over the 50-byte limit"):
            await post(pool, limit=50)
        with pytest.raises(HttpError, match="larger than 100 bytes"):
            await post(pool, limit=100)
        assert not pool._idle


async def test_header_injection_is_refused_before_anything_is_sent():
    with pytest.raises(HttpError, match="line break"):
        Pool("http://127.0.0.1:9/mcp", {"x-api-key": "secret\r\nx-evil: 1"})
    async with Upstream([json_answer(b"{}")]) as up:
        pool = Pool(up.url, {})
        with pytest.raises(HttpError, match="line break"):
            async with pool.post(b"{}", {"mcp-name": "echo\nx-evil: 1"}, 100):
                pass
        assert up.requests == []


async def test_cancelled_request_closes_its_connection():
    """Stateless era: closing the request's connection is how a request is cancelled upstream."""
    async with Upstream([b"HANG", json_answer(b"{}")]) as up:
        pool = Pool(up.url, {})
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await post(pool)
        await asyncio.wait_for(up.closed.wait(), 5)  # the upstream saw the connection end
        assert not pool._idle


async def test_unreachable_upstream_is_a_clear_error():
    async with Upstream([]) as up:
        url = up.url
    with pytest.raises(HttpError, match="cannot connect to 127.0.0.1"):
        await post(Pool(url, {}))


async def test_only_http_urls_and_proxies_from_the_environment_are_honoured(monkeypatch):
    with pytest.raises(HttpError, match="not an http"):
        Pool("ftp://example.com/", {})
    Pool.usable_for.cache_clear()
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert not Pool.usable_for("http://upstream.example/mcp")  # the SDK's client would use the proxy
    assert Pool.usable_for("http://internal.example/mcp")
    assert not Pool.usable_for("http://user:secret@internal.example/mcp")  # Basic auth: left to the SDK's client
    Pool.usable_for.cache_clear()
