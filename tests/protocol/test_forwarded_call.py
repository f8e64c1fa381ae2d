"""A forwarded call's audit row is settled exactly once on every path (gateway/protocol/forwarded_call.py)."""

from __future__ import annotations

import asyncio

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, ErrorData

from gateway.calls import Admission
from gateway.models import Call
from gateway.protocol import forwarded_call, jsonrpc
from gateway.protocol.era import Era
from gateway.protocol.forwarded_call import CANCELLED, ForwardedCall

pytestmark = pytest.mark.asyncio


class Server:
    slug, timeout_seconds = "files", 30


@pytest.fixture
def settled(monkeypatch):
    rows = []

    async def submit(item):
        rows.append((item[0].call_id, item[1]["outcome"], item[1]["error"], item[1]["result_size"]))

    monkeypatch.setattr(forwarded_call.OUTCOMES, "submit", submit)
    monkeypatch.setattr(forwarded_call.events, "call_changed", lambda *a: None)
    return rows


def new_call(era=Era.SESSION) -> ForwardedCall:
    msg = jsonrpc.parse(jsonrpc.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t"}}))
    return ForwardedCall(Admission(7, True, ""), Server(), msg, era)


def error(code: int) -> MCPError:
    return MCPError.from_error_data(ErrorData(code=code, message="m"))


async def run(call: ForwardedCall, body) -> object:
    async with call:
        return body(call)


PATHS = [
    # (what happened, outcome, error starts with)
    (lambda c: c.answered({"content": []}), Call.Outcome.OK, ""),
    (lambda c: c.answered({"content": [], "isError": True}), Call.Outcome.TOOL_ERROR, ""),
    (lambda c: c.failed(error(REQUEST_TIMEOUT)), Call.Outcome.TIMEOUT, "upstream timeout"),
    (lambda c: c.failed(error(CONNECTION_CLOSED)), Call.Outcome.INTERRUPTED, "upstream connection lost"),
    (lambda c: c.failed(error(-32602)), Call.Outcome.PROTOCOL_ERROR, "-32602: m"),
    (lambda c: c.unreachable(RuntimeError("down")), Call.Outcome.INTERRUPTED, "down"),
    (lambda c: c.refused(Call.Outcome.REFUSED, "no"), Call.Outcome.REFUSED, "no"),
    (lambda c: None, Call.Outcome.INTERRUPTED, "gateway error before the upstream answered"),  # nothing said
]


@pytest.mark.parametrize(("body", "outcome", "error_start"), PATHS)
async def test_every_path_settles_the_row_once_with_what_happened(settled, body, outcome, error_start):
    call = new_call()
    await run(call, body)
    await call.settle()  # a second settle is a no-op
    assert [(r[0], r[1]) for r in settled] == [(7, outcome)]
    assert settled[0][2].startswith(error_start)


async def test_an_answer_too_large_is_withheld_and_recorded_as_a_tool_error(settled, settings):
    settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES = 10
    reply = await run(new_call(), lambda c: c.answered({"content": [{"type": "text", "text": "x" * 100}]}))
    assert reply.body["result"]["isError"] is True
    assert settled[0][1] == Call.Outcome.TOOL_ERROR and "exceeds the gateway's limit" in settled[0][2]
    assert settled[0][3] > 10


async def test_an_unexpected_error_settles_as_interrupted_never_ok(settled):
    call = new_call()
    with pytest.raises(KeyError):
        async with call:
            raise KeyError("bug")
    assert settled == [(7, Call.Outcome.INTERRUPTED, "gateway error before the upstream answered", None)]


@pytest.mark.parametrize(("message", "error"), [(None, CANCELLED), ("evicted: too many sessions",) * 2])
async def test_a_cancellation_is_recorded_with_its_reason(settled, message, error):
    call = new_call()

    async def forwarded():
        async with call:
            await asyncio.sleep(60)

    task = asyncio.create_task(forwarded())
    await asyncio.sleep(0)
    task.cancel(message)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert settled == [(7, Call.Outcome.INTERRUPTED, error, None)]


async def test_a_kept_open_row_waits_for_the_end_of_the_call(settled):
    call = new_call(Era.STATELESS)
    await run(call, lambda c: (c.keep_open(), c.answered({"resultType": "input_required"})))
    assert settled == []
    call.record(Call.Outcome.OK, "", 5)
    await call.settle()
    assert settled == [(7, Call.Outcome.OK, "", 5)]
