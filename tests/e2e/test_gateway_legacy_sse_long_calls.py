"""Legacy HTTP+SSE (2024-11-05): a call that lasts longer than daphne's application_close_timeout (10 s after the
POST's 202) still answers on the stream and is audited `ok`: the call belongs to the session's stream, not to the
POST. The gateway's log never carries the stream's sessionId."""

from __future__ import annotations

import asyncio

import pytest
from mcp import Client
from mcp.client.sse import sse_client

from gateway.models import Call
from tests.e2e.test_gateway_peers import EVERYTHING, register, require

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POLICY = {"version": "1", "default": "deny", "tools": {"trigger-long-running-operation": {}, "echo": {}}}


def test_a_call_longer_than_ten_seconds_answers_on_the_legacy_stream(gateway):
    token = register("ev-long", POLICY, transport="stdio", command=[require(EVERYTHING)])
    seen: dict = {}

    async def go():
        url = gateway.base + "/mcp/ev-long/sse"
        async with Client(sse_client(url, headers={"Authorization": f"Bearer {token}"}, sse_read_timeout=60),
                          mode="legacy", cache=None) as c:
            seen["session"] = getattr(c.session, "_session_id", None)
            long = await c.call_tool("trigger-long-running-operation", {"duration": 13, "steps": 2})
            echo = await c.call_tool("echo", {"message": "still here"})  # the session outlived the long call
            return long, echo

    long, echo = asyncio.run(asyncio.wait_for(go(), 60))
    assert not long.is_error and "completed" in long.content[0].text.lower()
    assert not echo.is_error
    row = Call.objects.get(tool_name="trigger-long-running-operation")
    assert row.outcome == "ok" and row.latency_ms > 12_000
    log = gateway.log()
    assert "took too long to shut down" not in log
    assert "sessionId=" not in log
