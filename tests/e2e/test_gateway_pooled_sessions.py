"""Upstream sessions are pooled: session-era agent sessions that need nothing private share one upstream session per
server and gateway process. 200 sessions opened by the TypeScript SDK and the Python SDK and never closed keep the
stdio TrueNAS simulator at one process, not 200; a session that declared sampling on a server allowed to sample gets
its own; idle sessions are ended on the configured limit. A real gateway, real simulator processes, real clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from gateway.models import McpSession, Server
from tests.conftest import ROOT, start_gateway, stop
from tests.e2e.test_gateway_peers import register, sampling, via

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TS_AGENT = Path(__file__).parent / "peers" / "ts_agent.mjs"


def ts_agent(url: str, token: str, *args: str, **popen) -> subprocess.Popen:
    """The TypeScript SDK agent (tests/e2e/peers/ts_agent.mjs) as a process; `make test` installs the SDK."""
    if not (ROOT / "node_modules" / "@modelcontextprotocol" / "sdk").exists():
        raise AssertionError("the TypeScript SDK is missing: run `make test` (npm ci installs it)")
    return subprocess.Popen(["node", str(TS_AGENT), url, token, *args], cwd=ROOT, text=True, **popen)
SIM = [sys.executable, "-m", "truenas_sim"]
POLICY = {"version": "1", "default": "deny", "tools": {"system_info": {}, "pool_list": {}}}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def simulators_of(pid: int) -> list[int]:
    """The TrueNAS simulator processes started by the gateway process `pid` (its children running truenas_sim)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and b"truenas_sim" in cmdline:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def pooled_gateway(django_db_setup, django_db_blocker, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("pooled"), {
        "PORTCULLIS_CONNECTIONS_PER_CLIENT": "2000", "PORTCULLIS_SESSIONS_PER_GRANT": "500",
        "PORTCULLIS_SESSION_IDLE_S": "10", "PORTCULLIS_SESSION_RECHECK_S": "1", "PORTCULLIS_HEARTBEAT_S": "1"})
    yield gw
    stop(gw.proc)


def test_200_never_closed_sessions_of_two_sdks_share_one_simulator_process(pooled_gateway):
    gw = pooled_gateway
    token = register("nas-pool", POLICY, transport="stdio", command=SIM)
    node = ts_agent(gw.url("nas-pool"), token, "open", "100", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        opened = json.loads(node.stdout.readline())
        assert opened == {"opened": 100}

        async def python_sessions():
            clients = [via(gw, "nas-pool", token) for _ in range(100)]
            entered = []
            try:
                for client in clients:
                    entered.append(await client.__aenter__())
                results = [await c.call_tool("system_info", {}) for c in entered[::10]]
                assert not any(r.is_error for r in results)
                return len(entered), simulators_of(gw.proc.pid)
            finally:
                for client in reversed(entered):  # the SDK's exit; the sessions stay open on the gateway
                    await client.__aexit__(None, None, None)

        count, simulators = asyncio.run(asyncio.wait_for(python_sessions(), 240))
        assert count == 100
        assert len(simulators) == 1, f"{len(simulators)} simulator processes for 200 sessions"
        assert McpSession.objects.filter(server__slug="nas-pool", private=False).count() >= 200
        assert not McpSession.objects.filter(server__slug="nas-pool", private=True).exists()
    finally:
        node.stdin.close()
        node.wait(timeout=30)


def test_a_session_that_may_be_asked_to_sample_gets_its_own_upstream_session_and_one_that_may_not_shares(
        pooled_gateway):
    gw = pooled_gateway
    token = register("nas-ask", POLICY, transport="stdio", command=SIM)

    async def go():
        async with via(gw, "nas-ask", token, sampling_callback=sampling) as asking:
            await asking.list_tools()
            with_asker = simulators_of(gw.proc.pid)
            async with via(gw, "nas-ask", token) as plain:
                await plain.list_tools()
                with_both = simulators_of(gw.proc.pid)
        return with_asker, with_both

    with_asker, with_both = asyncio.run(asyncio.wait_for(go(), 60))
    rows = McpSession.objects.filter(server__slug="nas-ask").order_by("created_at")
    assert [row.private for row in rows] == [True, False]
    assert rows[0].capabilities == {"sampling": {}}
    assert len(with_both) == len(with_asker) + 1  # the plain one started the shared link, nothing more

    Server.objects.filter(slug="nas-ask").update(allow_sampling=False)

    async def again():
        async with via(gw, "nas-ask", token, sampling_callback=sampling) as asking:
            await asking.list_tools()

    asyncio.run(asyncio.wait_for(again(), 60))
    newest = McpSession.objects.filter(server__slug="nas-ask").latest("created_at")
    assert not newest.private and newest.capabilities == {}  # the upstream is never told the agent can sample


def test_idle_sessions_end_on_the_configured_limit_everywhere(pooled_gateway):
    gw = pooled_gateway
    token = register("nas-idle", POLICY, transport="stdio", command=SIM)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {}}
    with httpx2.Client(headers={**HEADERS, "Authorization": f"Bearer {token}"}, timeout=30) as http:
        busy = http.post(gw.url("nas-idle"), json=init).headers["mcp-session-id"]
        idle = http.post(gw.url("nas-idle"), json=init).headers["mcp-session-id"]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and McpSession.objects.get(id=idle).ended_at is None:
            assert http.post(gw.url("nas-idle"), json=ping, headers={"Mcp-Session-Id": busy}).status_code == 200
            time.sleep(1)
        assert McpSession.objects.get(id=idle).end_reason == "closed: idle too long"
        assert McpSession.objects.get(id=busy).ended_at is None  # used every second: still open
        gone = http.post(gw.url("nas-idle"), json=ping, headers={"Mcp-Session-Id": idle})
        assert gone.status_code == 404
