"""Resumable SSE in the session era (Last-Event-ID): a real daphne, a real stdio upstream that reports progress
(tests/peers/progress_server.py), raw HTTP and the real `mcp` SDK client. A disconnect is not a cancellation: the
call goes on, what it sends is kept, and a GET with Last-Event-ID gets the rest of that one stream."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import time
from dataclasses import dataclass

import httpx2
import pytest
from django.core.management import call_command
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, Server
from tests.conftest import ROOT, start_gateway, stop

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PEER = str(ROOT / "tests" / "peers" / "progress_server.py")
ALLOW = {"version": "1", "default": "allow"}


@pytest.fixture
def tokens(gateway):
    made = {}
    for slug in ("counter", "other"):
        server = Server.objects.create(slug=slug, name=slug, transport="stdio", command=[sys.executable, PEER])
        call_command("refresh_tools", slug, stdout=io.StringIO())
        policies.apply(server, ALLOW, actor="test")
        made[slug] = server
    return {"may": create_grant("may", [made["counter"]], None).token,
            "second": create_grant("second", [made["counter"]], None).token,
            "elsewhere": create_grant("elsewhere", [made["other"]], None).token}


# --- raw HTTP helpers ---

@dataclass
class Event:
    id: str | None
    data: str

    @property
    def message(self) -> dict:
        return json.loads(self.data)

    @property
    def seq(self) -> int:
        return int(self.id.rpartition("-")[2])

    @property
    def stream(self) -> str:
        return self.id.rpartition("-")[0]


def events(response, stop_when=lambda event: False):
    """SSE events of a streaming response until it ends, or until `stop_when` holds for one (comments skipped)."""
    seen, event_id, data = [], None, None
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and (event_id is not None or data is not None):
            seen.append(Event(event_id, data or ""))
            event_id, data = None, None
            if stop_when(seen[-1]):
                break
    return seen


def headers(token, session=None, **extra):
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
         "Accept": "application/json, text/event-stream"}
    if session:
        h["Mcp-Session-Id"] = session
    h.update(extra)
    return h


def initialize(gw, token, slug="counter", capabilities=None, version="2025-11-25"):
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": capabilities or {},
        "clientInfo": {"name": "t", "version": "1"}}}
    response = httpx2.post(gw.url(slug), json=body, headers=headers(token), timeout=30)
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx2.post(gw.url(slug), json=note, headers=headers(token, session), timeout=30).status_code == 202
    return session


def count_call(steps, interval, rid=7):
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {
        "name": "count", "arguments": {"steps": steps, "interval": interval}, "_meta": {"progressToken": "tok"}}}


def post_stream(gw, token, session, body, slug="counter"):
    return httpx2.stream("POST", gw.url(slug), json=body, headers=headers(token, session), timeout=15)


def resume(gw, token, session, last_event_id, slug="counter"):
    h = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", "Mcp-Session-Id": session,
         "Last-Event-ID": last_event_id}
    return httpx2.stream("GET", gw.url(slug), headers=h, timeout=15)


def is_progress(event):
    return bool(event.data) and event.message.get("method") == "notifications/progress"


def start_and_leave(gw, token, session, steps, interval):
    """POST a call that reports progress, read up to its first progress event, then disconnect."""
    with post_stream(gw, token, session, count_call(steps, interval)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return events(response, stop_when=is_progress)


def settled(tool="count", timeout=20.0) -> Call:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = Call.objects.filter(tool_name=tool).order_by("-id").first()
        if row is not None and row.outcome != "pending":
            return row
        time.sleep(0.05)  # bounded poll: the call finishes in the gateway after its agent left
    raise AssertionError(f"no settled {tool} call within {timeout} s")


def refused(response) -> dict:
    response.read()
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    return body["error"]


# --- a disconnected answer, resumed ---

def test_an_answer_cut_after_the_first_progress_event_is_resumed_with_the_rest_and_the_result(gateway, tokens):
    session = initialize(gateway, tokens["may"])
    before = start_and_leave(gateway, tokens["may"], session, steps=5, interval=0.3)
    priming, first = before
    assert priming.data == "" and priming.seq == 0  # 2025-11-25: an id before anything else
    assert first.stream == priming.stream and first.seq == 1 and first.message["params"]["progress"] == 1
    assert len(first.stream) == 16
    time.sleep(0.8)  # progress 2 and 3 are sent while nobody reads: they must come from the replay buffer

    with resume(gateway, tokens["may"], session, first.id) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        rest = events(response)  # returns only when the gateway ends the response

    assert [e.seq for e in rest] == [2, 3, 4, 5, 6]  # consecutive: none missing, none repeated
    assert {e.stream for e in rest} == {first.stream}
    assert [e.message["params"]["progress"] for e in rest[:-1]] == [2, 3, 4, 5]
    final = rest[-1].message
    assert final["id"] == 7 and final["result"]["content"][0]["text"] == "counted 5"
    row = settled()
    assert row.outcome == "ok"


def test_a_resume_after_the_call_finished_replays_it_and_ends(gateway, tokens):
    session = initialize(gateway, tokens["may"])
    _, first = start_and_leave(gateway, tokens["may"], session, steps=3, interval=0.05)
    assert settled().outcome == "ok"  # the call went on without its agent
    with resume(gateway, tokens["may"], session, first.id) as response:
        rest = events(response)
    assert [e.seq for e in rest] == [2, 3, 4]
    assert rest[-1].message["result"]["content"][0]["text"] == "counted 3"
    with resume(gateway, tokens["may"], session, rest[-1].id) as response:  # after the final: nothing, and done
        assert response.status_code == 200 and events(response) == []


def test_the_get_stream_is_resumable_too(gateway, tokens):
    # An agent that can list roots keeps a session-era upstream session, which may notify at any time.
    session = initialize(gateway, tokens["may"], capabilities={"roots": {}})
    h = {"Authorization": f"Bearer {tokens['may']}", "Accept": "text/event-stream", "Mcp-Session-Id": session}
    with httpx2.stream("GET", gateway.url("counter"), headers=h, timeout=15) as stream:
        announce = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                    "params": {"name": "announce_later", "arguments": {"times": 3, "delay": 0.4}}}
        answer = httpx2.post(gateway.url("counter"), json=announce, headers=headers(tokens["may"], session),
                             timeout=15)
        assert answer.json()["result"]["content"][0]["text"] == "3 announcements scheduled"
        seen = events(stream, stop_when=lambda e: bool(e.data))
    priming, first = seen
    assert priming.data == "" and priming.seq == 0
    assert first.message["method"] == "notifications/resources/list_changed" and first.seq == 1
    time.sleep(1.5)  # the other two announcements arrive while nobody reads the stream
    with resume(gateway, tokens["may"], session, first.id) as response:
        rest = events(response, stop_when=lambda e: e.seq == 3)
    assert [(e.stream, e.seq) for e in rest] == [(first.stream, 2), (first.stream, 3)]
    assert {e.message["method"] for e in rest} == {"notifications/resources/list_changed"}


def test_agents_before_2025_11_25_get_event_ids_but_no_priming_event(gateway, tokens):
    session = initialize(gateway, tokens["may"], version="2025-06-18")
    first, *_ = start_and_leave(gateway, tokens["may"], session, steps=2, interval=0.05)
    assert is_progress(first) and first.seq == 1
    with resume(gateway, tokens["may"], session, first.id) as response:
        assert [e.seq for e in events(response)] == [2, 3]


def test_the_stateless_era_has_no_event_ids(gateway, tokens):
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
            "progressToken": "tok"}
    body = count_call(2, 0.05)
    body["params"]["_meta"] = meta
    h = headers(tokens["may"], **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
                                  "Mcp-Name": "count"})
    with httpx2.stream("POST", gateway.url("counter"), json=body, headers=h, timeout=15) as response:
        assert response.headers["content-type"] == "text/event-stream"
        seen = events(response)
    assert [e.id for e in seen] == [None, None, None] and "counted 2" in seen[-1].data


# --- refusals: nothing of another stream, never a hang ---

def test_another_sessions_event_id_is_refused_and_nothing_leaks(gateway, tokens):
    mine = initialize(gateway, tokens["may"])
    _, first = start_and_leave(gateway, tokens["may"], mine, steps=3, interval=0.05)
    settled()
    strangers = [(tokens["may"], initialize(gateway, tokens["may"]), "counter"),  # same grant, other session
                 (tokens["second"], initialize(gateway, tokens["second"]), "counter"),  # other grant
                 (tokens["elsewhere"], initialize(gateway, tokens["elsewhere"], "other"), "other")]  # other server
    for token, session, slug in strangers:
        with resume(gateway, token, session, first.id, slug) as response:
            assert response.status_code == 404
            error = refused(response)
            assert error["code"] == -32006 and "another session" in error["message"]
            assert "counted" not in response.text and "progress" not in response.text
    with resume(gateway, tokens["second"], mine, first.id) as response:  # my session id, another grant's token
        assert response.status_code == 404 and refused(response)["code"] == -32004
    with resume(gateway, tokens["may"], mine, first.id) as response:  # the id was good all along
        assert response.status_code == 200 and events(response)[-1].message["result"]


@pytest.mark.parametrize("bad", ["garbage", "abc-1", "0123456789abcdef", "0123456789abcdef-x",
                                 "0123456789abcdef-01", "0123456789ABCDEF-1", "0123456789abcdef-1-2", "x" * 300])
def test_a_malformed_last_event_id_is_a_400_with_a_json_rpc_error(gateway, tokens, bad):
    session = initialize(gateway, tokens["may"])
    with resume(gateway, tokens["may"], session, bad) as response:
        assert response.status_code == 400
        error = refused(response)
    assert error["code"] == -32600 and "Last-Event-ID" in error["message"]


def test_an_unknown_event_id_is_a_404_with_a_json_rpc_error(gateway, tokens):
    session = initialize(gateway, tokens["may"])
    _, first = start_and_leave(gateway, tokens["may"], session, steps=2, interval=0.05)
    settled()
    for unknown in ["0123456789abcdef-1", f"{first.stream}-99"]:  # no such stream; past its last event
        with resume(gateway, tokens["may"], session, unknown) as response:
            assert response.status_code == 404
            assert refused(response)["code"] == -32006


def test_after_delete_the_session_and_its_streams_are_gone(gateway, tokens):
    session = initialize(gateway, tokens["may"])
    _, first = start_and_leave(gateway, tokens["may"], session, steps=2, interval=0.05)
    settled()
    assert httpx2.delete(gateway.url("counter"), headers=headers(tokens["may"], session), timeout=15).status_code == 200
    with resume(gateway, tokens["may"], session, first.id) as response:
        assert response.status_code == 404 and refused(response)["code"] == -32004


# --- the buffer is bounded ---

def test_the_replay_buffer_keeps_only_the_newest_events_and_finished_streams_expire(tokens, django_db_setup,
                                                                                    tmp_path):
    small = start_gateway(tmp_path, {"PORTCULLIS_SSE_REPLAY_MAX_EVENTS": "3", "PORTCULLIS_SSE_REPLAY_TTL_S": "3"})
    try:
        session = initialize(small, tokens["may"])
        _, first = start_and_leave(small, tokens["may"], session, steps=8, interval=0.05)
        settled()  # 8 progress events and the final response (events 1..9) were sent; 7, 8, 9 are kept
        with resume(small, tokens["may"], session, first.id) as response:
            assert response.status_code == 404
            error = refused(response)
        assert error["code"] == -32006 and "no longer kept" in error["message"] and "3 events" in error["message"]
        with resume(small, tokens["may"], session, f"{first.stream}-6") as response:
            assert response.status_code == 200
            rest = events(response)
        assert [e.seq for e in rest] == [7, 8, 9]
        assert rest[-1].message["result"]["content"][0]["text"] == "counted 8"
        time.sleep(3.5)  # past the TTL, a finished stream is forgotten
        with resume(small, tokens["may"], session, f"{first.stream}-6") as response:
            assert response.status_code == 404
            assert "finished more than 3 s ago" in refused(response)["message"]
    finally:
        stop(small.proc)


def test_the_byte_cap_spans_all_streams_of_a_session_and_everything_is_freed_when_it_ends(settings):
    from gateway.protocol.jsonrpc import RpcError
    from gateway.protocol.resumption import Replay, ResumableStream

    settings.PORTCULLIS_SSE_REPLAY_MAX_BYTES = 2048

    async def go():
        replay = Replay()
        a, b = ResumableStream(replay, priming=False), ResumableStream(replay, priming=False)
        for step in range(20):  # ~200 bytes a frame, the two streams interleaved
            await (a if step % 2 else b).put({"jsonrpc": "2.0", "method": "notifications/message",
                                               "params": {"data": "x" * 120, "step": step}})
        assert replay.size <= 2048 and len(replay.events) < 20
        kept = [json.loads(frame.split(b"data: ")[1])["params"]["step"] for _, _, frame in replay.events]
        assert kept == list(range(20 - len(kept), 20))  # the newest, whichever stream sent them
        for stream in (a, b):
            with pytest.raises(RpcError, match="no longer kept"):
                replay.find(stream.event_id(1), time.monotonic())
        found, after = replay.find(b.event_id(b.seq - 2), time.monotonic())
        assert found is b and b"x" * 120 in b"".join(replay.frames(b, after))
        a.finish({"jsonrpc": "2.0", "id": 1, "result": {}})
        b.discard()  # e.g. answered as plain JSON after all: its events go at once
        assert {owner for owner, _, _ in replay.events} == {a} and set(replay.streams) == {a.key}
        replay.close()
        assert not replay.events and not replay.streams and replay.size == 0

    asyncio.run(go())


# --- the SDK client resumes on its own ---

class CuttingProxy:
    """A TCP proxy in front of the gateway that cuts the first connection whose answer carries a progress event,
    as a flaky network would, and records the GET requests it forwards."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.cut, self.gets = target_port, False, []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, client_reader, client_writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upward() -> None:
            with contextlib.suppress(OSError):
                while data := await client_reader.read(65536):
                    if data.startswith(b"GET "):
                        self.gets.append(data.decode("latin-1"))
                    up_writer.write(data)
                    await up_writer.drain()
            up_writer.close()

        async def downward() -> None:
            with contextlib.suppress(OSError):
                while data := await up_reader.read(65536):
                    client_writer.write(data)
                    await client_writer.drain()
                    if not self.cut and b"notifications/progress" in data:
                        self.cut = True
                        break
            client_writer.close()
            up_writer.close()

        await asyncio.gather(upward(), downward(), return_exceptions=True)


def test_the_sdk_client_resumes_a_cut_answer_by_itself(gateway, tokens):
    async def go():
        proxy = CuttingProxy(gateway.port)
        port = await proxy.start()
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {tokens['may']}"}, timeout=30)
        progress = []

        async def on_progress(p, total, message):
            progress.append(p)

        async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp/counter/", http_client=http),
                          mode="legacy", cache=None) as client:
            result = await client.call_tool("count", {"steps": 5, "interval": 0.3}, progress_callback=on_progress)
        proxy.server.close()
        return proxy, progress, result

    proxy, progress, result = asyncio.run(asyncio.wait_for(go(), 60))
    assert proxy.cut  # the answer really was cut mid-call
    assert any("last-event-id:" in get.lower() for get in proxy.gets)  # and the SDK came back with its last id
    assert progress == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert not result.is_error and result.content[0].text == "counted 5"
    assert settled().outcome == "ok"
