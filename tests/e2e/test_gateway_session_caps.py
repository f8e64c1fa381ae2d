"""Sessions and legacy streams are capped per grant, and one grant never ends another's: a grant opening sessions
past its cap closes its own oldest idle one (or is refused with 429 when all are busy), while another grant's call
in flight finishes and is audited as what it was. A real gateway (caps set small) and a real upstream."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.grants import create_grant
from gateway.models import Call, Server
from tests.conftest import start_gateway, stop
from tests.e2e.test_gateway_peers import EVERYTHING, register, require

POLICY = {"version": "1", "default": "allow"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@pytest.fixture(scope="module")
def capped_gateway(django_db_setup, django_db_blocker, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("capped"), {"PORTCULLIS_SESSIONS_PER_GRANT": "2",
                                                           "PORTCULLIS_LEGACY_STREAMS_PER_GRANT": "1"})
    yield gw
    stop(gw.proc)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_grant_past_its_cap_closes_its_own_oldest_session_never_anothers(capped_gateway):
    gw = capped_gateway
    token_b = register("ev", POLICY, transport="stdio", command=[require(EVERYTHING)])
    token_a = create_grant("agent-a", [Server.objects.get(slug="ev")], None).token
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

    async def go():
        http_b = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token_b}"}, timeout=60)
        async with Client(streamable_http_client(gw.url("ev"), http_client=http_b), mode="legacy", cache=None) as b:
            slow = asyncio.create_task(b.call_tool("trigger-long-running-operation", {"duration": 4, "steps": 2}))
            async with httpx2.AsyncClient(headers={**headers, "Authorization": f"Bearer {token_a}"},
                                          timeout=60) as a:
                opened = []
                for _ in range(5):  # cap 2: each one past it closes A's own oldest idle session
                    response = await a.post(gw.url("ev"), json=INIT)
                    assert response.status_code == 200, response.text
                    opened.append(response.headers["mcp-session-id"])
                ping = {"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {}}
                alive = [(await a.post(gw.url("ev"), json=ping, headers={"Mcp-Session-Id": sid})).status_code
                         for sid in opened]
            return await slow, alive

    result, alive = asyncio.run(asyncio.wait_for(go(), 90))
    assert alive == [404, 404, 404, 200, 200]
    assert not result.is_error
    assert Call.objects.get(tool_name="trigger-long-running-operation", grant_name="agent-ev").outcome == "ok"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_legacy_streams_are_capped_per_grant(capped_gateway):
    gw = capped_gateway
    token_b = register("ev-sse", POLICY, transport="stdio", command=[require(EVERYTHING)])
    token_a = create_grant("agent-a-sse", [Server.objects.get(slug="ev-sse")], None).token
    url = gw.base + "/mcp/ev-sse/sse"

    def opening(token):
        return httpx2.stream("GET", url, headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
                             timeout=30)

    with opening(token_a) as first:
        assert first.status_code == 200
        with opening(token_a) as second:
            assert second.status_code == 429
            assert "legacy SSE streams" in second.read().decode()
        with opening(token_b) as other:  # another grant is not affected
            assert other.status_code == 200

