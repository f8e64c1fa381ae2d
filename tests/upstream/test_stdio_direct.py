"""The direct path to a stdio upstream (gateway/upstream/stdio_pipe.py): a request that needs nothing streamed back
is written on the server's stdin and its answer matched by id, without the SDK client's streams — against real
server processes (tests/peers/fault_server.py and the bench's echo upstream), never a mock."""

from __future__ import annotations

import asyncio
import sys

import pytest
import pytest_asyncio
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from gateway.models import Server
from gateway.upstream.link import UpstreamLink
from gateway.upstream.stdio_pipe import AnswerTooLarge
from tests.conftest import ROOT

pytestmark = pytest.mark.asyncio

FAULT_SERVER = [sys.executable, str(ROOT / "tests" / "peers" / "fault_server.py")]


def stdio_server(command: list[str], slug: str = "faulty") -> Server:
    return Server(slug=slug, name=slug, transport=Server.Transport.STDIO, command=command, timeout_seconds=30)


class SdkPathUsed(AssertionError):
    pass


@pytest_asyncio.fixture
async def link(monkeypatch):
    """A live link to the fault server whose SDK request path fails the test if a tools/call takes it."""
    opened = UpstreamLink(stdio_server(FAULT_SERVER))
    await opened.start()
    dispatcher = opened.client.session._dispatcher
    original = dispatcher.send_raw_request

    async def guarded(method, params, opts=None):
        if method == "tools/call" and not (opts or {}).get("on_progress"):
            raise SdkPathUsed(f"{method} went through the SDK client's streams")
        return await original(method, params, opts)

    monkeypatch.setattr(dispatcher, "send_raw_request", guarded)
    try:
        yield opened
    finally:
        await opened.close()


async def call(link: UpstreamLink, name: str, arguments: dict, timeout: float = 30) -> dict:
    return await link.request("tools/call", {"name": name, "arguments": arguments}, timeout=timeout)


def text(result: dict) -> str:
    return result["content"][0]["text"]


async def test_a_call_goes_on_the_pipe_and_comes_back_unchanged(link):
    result = await call(link, "ok", {"text": "héllo ✓"})
    assert text(result) == "ok: héllo ✓" and not result.get("isError")
    # What the SDK negotiated still holds: listing goes through the SDK client on the same pipes.
    listed = await link.request("tools/list", {}, timeout=30)
    assert {"ok", "sleep", "die"} <= {tool["name"] for tool in listed["tools"]}


async def test_concurrent_calls_answered_out_of_order_each_get_their_own_answer(link):
    # Longer sleeps first: the server answers in the reverse order of the requests.
    delays = [0.3 - i * 0.01 for i in range(24)]
    results = await asyncio.gather(*(call(link, "sleep", {"seconds": d}) for d in delays),
                                   *(call(link, "ok", {"text": str(i)}) for i in range(24)))
    assert [text(r) for r in results[:24]] == [f"slept {d}" for d in delays]
    assert [text(r) for r in results[24:]] == [f"ok: {i}" for i in range(24)]


async def cancellations_seen(link: UpstreamLink) -> str:
    """The server's own count of the cancellations it received, once one arrived (or after ~2.5 s)."""
    for _ in range(50):
        stats = text(await call(link, "stats", {}))
        if "cancelled=0" not in stats:
            return stats
        await asyncio.sleep(0.05)
    return stats


async def test_a_timeout_is_an_error_and_the_server_is_told_to_cancel(link):
    with pytest.raises(MCPError) as caught:
        await call(link, "sleep", {"seconds": 30}, timeout=0.5)
    assert caught.value.error.code == REQUEST_TIMEOUT and "0.5 s" in caught.value.error.message
    assert "cancelled=1" in await cancellations_seen(link)


async def test_a_cancelled_caller_cancels_upstream_too(link):
    task = asyncio.create_task(call(link, "sleep", {"seconds": 30}))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "cancelled=1" in await cancellations_seen(link)


async def test_a_server_that_dies_mid_call_fails_the_calls_at_once_and_the_link_restarts(link):
    waiting = asyncio.create_task(call(link, "sleep", {"seconds": 25}))
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    for pending in (call(link, "die", {}), waiting):
        with pytest.raises(MCPError) as caught:
            await pending
        assert caught.value.error.code == CONNECTION_CLOSED
    assert asyncio.get_running_loop().time() - started < 10  # not the 25 s sleep, not the 30 s timeout
    for _ in range(100):
        if not link.alive:
            break
        await asyncio.sleep(0.02)
    assert not link.alive
    await link.ensure()
    assert text(await link.request("tools/call", {"name": "ok", "arguments": {}}, timeout=30)) == "ok: fine"


async def test_a_call_is_written_on_asyncios_own_writer_not_anyios_send(link, monkeypatch):
    """anyio's send() yields to the event loop after every write: one more loop iteration per call (measured in
    docs/ARCHITECTURE.md, "Performance")."""
    stdin = link._pipe._process.stdin

    async def anyio_send(data: bytes) -> None:
        raise AssertionError("the direct request went through anyio's send()")

    monkeypatch.setattr(stdin, "send", anyio_send)
    assert text(await call(link, "ok", {})) == "ok: fine"


async def test_a_call_on_a_closed_stdin_is_a_lost_connection_at_once(link):
    link._pipe._process.stdin._stream.close()
    with pytest.raises(MCPError) as caught:
        await call(link, "ok", {})
    assert caught.value.error.code == CONNECTION_CLOSED


async def test_a_line_that_is_not_json_rpc_does_not_break_the_link(link):
    assert text(await call(link, "garbage", {})) == "after garbage"
    assert text(await call(link, "ok", {})) == "ok: fine"


async def test_a_tool_error_and_a_protocol_error_come_back_as_the_server_wrote_them(link):
    result = await call(link, "sleep", {"seconds": "not a number"})
    assert result.get("isError") is True
    with pytest.raises(MCPError) as caught:
        await link.request("prompts/get", {"name": "nope"}, timeout=30)
    assert caught.value.error.code != CONNECTION_CLOSED


async def test_a_big_answer_arrives_whole(link):
    assert text(await call(link, "huge", {"size": 3_000_000})) == "x" * 3_000_000


async def test_an_answer_over_the_message_limit_is_discarded_as_it_arrives_and_the_link_goes_on(link, settings):
    settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES = 100_000
    await link.close()
    await link.start()  # the limit is read when the pipes open
    with pytest.raises(AnswerTooLarge) as caught:
        await call(link, "huge", {"size": 400_000})
    assert caught.value.size > 400_000 and "100000-byte limit" in caught.value.error.message
    assert text(await call(link, "huge", {"size": 1000})) == "x" * 1000
    assert link.alive


async def test_progress_still_goes_through_the_sdk_client():
    opened = UpstreamLink(stdio_server([sys.executable, str(ROOT / "tests" / "peers" / "progress_server.py")],
                                       "progress"))
    await opened.start()
    try:
        seen = []

        async def on_progress(progress, total, message):
            seen.append(progress)

        result = await opened.request("tools/call", {"name": "count", "arguments": {"steps": 3, "interval": 0.01}},
                                      timeout=30, on_progress=on_progress)
        assert not result.get("isError") and len(seen) == 3
    finally:
        await opened.close()
