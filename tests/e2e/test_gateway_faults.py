"""Upstream and client faults: a killed stdio upstream, a hanging one, one that writes garbage, and clients that
disconnect mid-stream. Each is a real process (tests/peers/fault_server.py), never a mock."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time

import httpx2
import pytest
from django.core.management import call_command
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, Server
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAULT_SERVER = str(ROOT / "tests" / "peers" / "fault_server.py")


@pytest.fixture
def token(gateway):
    server = Server.objects.create(slug="faulty", name="faulty", transport="stdio", timeout_seconds=2,
                                   command=[sys.executable, FAULT_SERVER])
    call_command("refresh_tools", "faulty", stdout=io.StringIO())
    policies.apply(server, {"version": "1", "default": "allow"}, actor="test")
    return create_grant("agent", [server], None).token


def client(gateway, token):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(gateway.url("faulty"), http_client=http), mode="legacy", cache=None)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def text(result) -> str:
    return result.content[0].text


def children(pid: int) -> list[int]:
    """Live child processes of a pid (zombies excluded), from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def test_a_killed_upstream_fails_the_call_in_flight_and_the_next_call_restarts_it(gateway, token):
    async def go():
        async with client(gateway, token) as c:
            before = text(await c.call_tool("stats", {}))
            died = await c.call_tool("die", {})
            after = await c.call_tool("stats", {})
            return before, died, after

    before, died, after = run(go())
    assert died.is_error and "outcome is unknown" in text(died)
    assert not after.is_error and text(after) != before  # a new process answered
    row = Call.objects.get(tool_name="die")
    assert row.outcome == "interrupted"
    server = Server.objects.get(slug="faulty")
    assert server.health == "error" and "faulty" in server.last_error


def test_a_hanging_upstream_times_out_within_the_limit_and_is_told_to_cancel(gateway, token):
    async def go():
        async with client(gateway, token) as c:
            started = time.monotonic()
            hung = await c.call_tool("sleep", {"seconds": 30})
            elapsed = time.monotonic() - started
            stats = text(await c.call_tool("stats", {}))
            return hung, elapsed, stats

    hung, elapsed, stats = run(go())
    assert hung.is_error and text(hung).startswith("upstream timeout: faulty did not answer within 2 s")
    assert elapsed < 2 + 1
    assert "cancelled=1" in stats
    assert Call.objects.get(tool_name="sleep").outcome == "timeout"


def test_an_upstream_that_writes_garbage_does_not_break_the_session(gateway, token):
    async def go():
        async with client(gateway, token) as c:
            return await c.call_tool("garbage", {}), await c.call_tool("ok", {"text": "still"})

    garbage, still = run(go())
    assert text(still) == "ok: still"
    assert not garbage.is_error or "outcome is unknown" in text(garbage)


def test_clients_that_disconnect_mid_stream_leak_no_processes_and_every_call_is_settled(gateway, token):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    session = httpx2.post(gateway.url("faulty"), json=init, headers=headers, timeout=30).headers["mcp-session-id"]
    headers["Mcp-Session-Id"] = session
    baseline = len(children(gateway.proc.pid))
    for i in range(15):
        body = {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                "params": {"name": "sleep", "arguments": {"seconds": 0.2}, "_meta": {"progressToken": i}}}
        try:
            httpx2.post(gateway.url("faulty"), json=body, headers=headers, timeout=0.05)
        except httpx2.TimeoutException:
            pass  # the client gave up and closed the connection mid-call
    deadline = time.monotonic() + 20
    while Call.objects.filter(outcome="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # bounded poll: the calls finish upstream after their clients left
    assert not Call.objects.filter(outcome="pending").exists()
    assert Call.objects.filter(tool_name="sleep").count() == 15
    assert len(children(gateway.proc.pid)) == baseline
    ok = httpx2.post(gateway.url("faulty"), headers=headers, timeout=30, json={
        "jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "ok", "arguments": {}}})
    assert json.loads(ok.text)["result"]["content"][0]["text"] == "ok: fine"


def test_an_oversized_upstream_answer_is_refused_cleanly(token, django_db_setup, tmp_path):
    from tests.conftest import start_gateway, stop

    small = start_gateway(tmp_path, {"PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES": "100000"})
    try:
        async def go():
            async with client(small, token) as c:
                return await c.call_tool("huge", {"size": 200_000}), await c.call_tool("huge", {"size": 1000})

        refused, fine = run(go())
    finally:
        stop(small.proc)
    assert refused.is_error and "exceeds the gateway's limit of 100000 bytes" in text(refused)
    assert not fine.is_error and len(text(fine)) == 1000
    row = Call.objects.filter(tool_name="huge").order_by("id").first()
    assert row.outcome == "tool_error" and "exceeds" in row.error


def test_a_stateless_client_closing_its_stream_cancels_the_upstream_call(gateway, token):
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
               "Mcp-Method": "tools/call", "Mcp-Name": "sleep"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"seconds": 1.5}, "_meta": meta}}
    stats = {**body, "id": 2, "params": {"name": "stats", "arguments": {}, "_meta": meta}}
    warm = httpx2.post(gateway.url("faulty"), json=stats, headers={**headers, "Mcp-Name": "stats"}, timeout=30)
    assert "cancelled=0" in warm.json()["result"]["content"][0]["text"]  # the shared upstream link is up
    with pytest.raises(httpx2.TimeoutException):
        httpx2.post(gateway.url("faulty"), json=body, headers=headers, timeout=0.3)
    deadline = time.monotonic() + 10
    while Call.objects.filter(outcome="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded poll for the gateway to settle the cancelled call
    assert Call.objects.get(tool_name="sleep").outcome == "interrupted"
    answer = httpx2.post(gateway.url("faulty"), json=stats, headers={**headers, "Mcp-Name": "stats"}, timeout=30)
    assert "cancelled=1" in answer.json()["result"]["content"][0]["text"]


def test_an_elicitation_from_a_dual_era_upstream_reaches_a_session_agent_and_back(gateway, token):
    from mcp import types

    async def answer(ctx, params):
        return types.ElicitResult(action="accept", content={"answer": "blue"})

    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with Client(streamable_http_client(gateway.url("faulty"), http_client=http), mode="legacy",
                          cache=None, elicitation_callback=answer) as c:
            return await c.call_tool("ask", {"question": "favourite colour?"})

    assert text(run(go())) == "user said: blue"
