"""A team's gateway: three gateway processes behind HAProxy (Debian's, round-robin, no stickiness) sharing the suite's
database (PostgreSQL in CI) and Redis. Session-era Python SDK clients, the TypeScript SDK, mcp-remote and
stateless-era clients each list and make 20 calls; a held call is approved through the dashboard (whichever process
HAProxy picks); a rate limit is exact across the processes; a sampling round trip crosses processes (the agent's
answer lands where HAProxy sends it). Then one process is killed with SIGKILL mid-run: no call lacks an audit row,
none runs twice, every client goes on. Finally SIGTERM drains a process with calls in flight."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time

import httpx2
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from mcp import Client, types
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from deploy.cluster import free_port, start_cluster
from gateway.grants import create_grant
from gateway.models import Approval, Call, McpSession, Server
from tests.conftest import ROOT, database_url_for_subprocess, http_peer, register_http_server
from tests.e2e.test_gateway_peers import EVERYTHING, register, require, sampling
from tests.e2e.test_gateway_pooled_sessions import ts_agent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SIM = [sys.executable, "-m", "truenas_sim"]
POLICY = {"version": "1", "default": "deny",
          "tools": {"system_info": {}, "pool_list": {},
                    "disk_list": {"limits": [{"counter": "disks", "window": "hour", "max": 30, "scope": "grant"}]},
                    "dataset_create": {"action": "approve"}}}
EV_POLICY = {"version": "1", "default": "deny",
             "tools": {"trigger-sampling-request": {}, "trigger-long-running-operation": {}}}
MCP_REMOTE = ROOT / "node_modules" / ".bin" / "mcp-remote"


@pytest.fixture(scope="module")
def cluster(django_db_setup, django_db_blocker, tmp_path_factory, redis_url):
    state = tmp_path_factory.mktemp("cluster")
    running = start_cluster(3, free_port(), state, {
        "DATABASE_URL": database_url_for_subprocess(), "REDIS_URL": redis_url, "SECRET_KEY": settings.SECRET_KEY,
        "PORTCULLIS_SECRETS_KEY": settings.PORTCULLIS_SECRETS_KEY, "PORTCULLIS_DRAIN_S": "20",
        "PORTCULLIS_HEARTBEAT_S": "2", "PORTCULLIS_APPROVAL_HOLD_S": "40", "TRUENAS_SIM_JOB_SECONDS": "0.3"})
    yield running
    running.stop()


@pytest.fixture
def nas(cluster):
    """The TrueNAS simulator registered (each test starts from an empty database) and its first grant's token."""
    return register("nas", POLICY, transport="stdio", command=SIM)


@pytest.fixture
def ev(cluster):
    return register("ev", EV_POLICY, transport="stdio", command=[require(EVERYTHING)])


def session_client(cluster, slug, token, **kwargs) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=90)
    return Client(streamable_http_client(cluster.url(slug), http_client=http), mode="legacy", cache=None, **kwargs)


def stateless_client(cluster, slug, token) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=90)
    return Client(streamable_http_client(cluster.url(slug), http_client=http), mode="auto", cache=None)


def legacy_sse_client(cluster, slug, token) -> Client:
    """The legacy HTTP+SSE transport: the stream on one process, its POSTs wherever HAProxy sends them."""
    return Client(sse_client(f"{cluster.base}/mcp/{slug}/sse", headers={"Authorization": f"Bearer {token}"}),
                  mode="legacy", cache=None)


def remote_client(cluster, slug, token) -> Client:
    """mcp-remote (npm) as a stdio server in front of the cluster, as Claude Desktop runs it."""
    params = StdioServerParameters(command=require(MCP_REMOTE), args=[
        cluster.url(slug), "--header", f"Authorization:Bearer {token}", "--transport", "http-only"])
    return Client(params, mode="legacy", cache=None)


async def twenty_calls(client: Client, tool: str = "system_info") -> tuple[int, list[str]]:
    async with client as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert tool in names
        errors = []
        for _ in range(20):
            result = await c.call_tool(tool, {})
            if result.is_error:
                errors.append(str(result.content)[:200])
        return 20 - len(errors), errors


def test_every_kind_of_client_works_through_three_processes_with_round_robin(cluster, nas):
    token = nas

    async def everyone():
        clients = [session_client(cluster, "nas", token) for _ in range(4)]
        clients += [stateless_client(cluster, "nas", token) for _ in range(2)]
        clients.append(remote_client(cluster, "nas", token))
        clients.append(legacy_sse_client(cluster, "nas", token))
        return await asyncio.gather(*(twenty_calls(c) for c in clients))

    node = ts_agent(cluster.url("nas"), token, "calls", "20", "system_info", "{}", stdout=subprocess.PIPE)
    results = asyncio.run(asyncio.wait_for(everyone(), 240))
    ts = json.loads(node.communicate(timeout=120)[0])
    assert [ok for ok, _ in results] == [20] * 8, results
    assert ts["ok"] == 20 and ts["errors"] == [], ts
    rows = Call.objects.filter(server__slug="nas", tool_name="system_info")
    assert rows.count() == 180 and set(rows.values_list("outcome", flat=True)) == {"ok"}
    assert len(set(rows.values_list("worker", flat=True))) == 3  # every process served some


def test_a_rate_limit_is_exact_across_the_processes(cluster, nas):
    token = create_grant("limited", [Server.objects.get(slug="nas")], None).token

    async def hammer():
        async def one():
            async with stateless_client(cluster, "nas", token) as c:
                return [not (await c.call_tool("disk_list", {})).is_error for _ in range(8)]
        return await asyncio.gather(*(one() for _ in range(5)))

    outcomes = [ok for batch in asyncio.run(asyncio.wait_for(hammer(), 120)) for ok in batch]
    assert outcomes.count(True) == 30 and outcomes.count(False) == 10
    rows = Call.objects.filter(grant__name="limited", tool_name="disk_list")
    assert rows.filter(outcome="ok").count() == 30 and rows.filter(refusal="limit").count() == 10
    assert len(set(rows.values_list("worker", flat=True))) == 3


def _sign_in(http: httpx2.Client, base: str) -> None:
    page = http.get(f"{base}/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    signed = http.post(f"{base}/login/", data={"username": "alice", "password": "a-long-password-1",
                                               "csrfmiddlewaretoken": csrf}, headers={"Referer": f"{base}/login/"})
    assert signed.status_code == 302, signed.text[:500]


def test_a_held_call_is_approved_through_whichever_process_serves_the_dashboard(cluster, nas):
    token = create_grant("holder", [Server.objects.get(slug="nas")], None).token
    get_user_model().objects.create_user("alice", password="a-long-password-1", is_staff=True)

    async def held():
        async with session_client(cluster, "nas", token) as c:
            return await c.call_tool("dataset_create", {"name": "tank/team"})

    def approve():
        deadline = time.monotonic() + 30
        while not Approval.objects.filter(state="pending").exists():
            assert time.monotonic() < deadline, "the call was never held"
            time.sleep(0.2)
        approval = Approval.objects.get(state="pending")
        with httpx2.Client(timeout=30) as http:
            _sign_in(http, cluster.base)
            page = http.get(f"{cluster.base}/approvals/")
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            decided = http.post(f"{cluster.base}/approvals/{approval.public_id}/decide/",
                                data={"decision": "approve", "csrfmiddlewaretoken": csrf},
                                headers={"Referer": f"{cluster.base}/approvals/"})
            assert decided.status_code == 302, decided.text[:500]

    async def both():
        call = asyncio.create_task(held())
        await asyncio.to_thread(approve)
        return await call

    result = asyncio.run(asyncio.wait_for(both(), 90))
    assert not result.is_error, result.content
    assert Call.objects.get(grant__name="holder", tool_name="dataset_create").outcome == "ok"


def test_a_sampling_round_trip_crosses_processes(cluster, ev):
    token = ev

    async def go():
        async with session_client(cluster, "ev", token, sampling_callback=sampling) as c:
            return [await c.call_tool("trigger-sampling-request", {"prompt": "hi", "maxTokens": 5})
                    for _ in range(6)]

    results = asyncio.run(asyncio.wait_for(go(), 120))
    assert all("sampled-by-the-agent" in str(r.content) for r in results), results
    assert McpSession.objects.get(server__slug="ev").private


@pytest.fixture(scope="module")
def asking_upstream():
    """A session-era-only server whose tools elicit mid-call (tests/peers/fault_server.py)."""
    with http_peer([sys.executable, str(ROOT / "tests" / "peers" / "fault_server.py"), "--session-only", "--http",
                    "{port}"], quiet=True) as url:
        yield url


def test_a_stateless_agents_parked_call_goes_on_whichever_process_its_retry_reaches(cluster, asking_upstream):
    server = register_http_server("sessions", asking_upstream, {"version": "1", "default": "allow"})
    token = create_grant("asker", [server], None).token

    async def on_elicit(ctx, params):
        return types.ElicitResult(action="accept", content={"answer": f"{params.message} blue"})

    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with Client(streamable_http_client(cluster.url("sessions"), http_client=http), cache=None,
                          elicitation_callback=on_elicit) as client:
            assert client.protocol_version == "2026-07-28"
            return [await client.call_tool("ask", {"question": f"q{n}?"}) for n in range(6)]

    results = asyncio.run(asyncio.wait_for(go(), 120))
    assert [r.content[0].text for r in results] == [f"user said: q{n}? blue" for n in range(6)]
    rows = Call.objects.filter(tool_name="ask").order_by("id")
    assert rows.count() == 12 and set(rows.values_list("outcome", flat=True)) == {"ok"}
    firsts, retries = rows[::2], rows[1::2]
    assert all(r.reason == f"continues call #{f.pk} (input round 1)" for f, r in zip(firsts, retries, strict=True))
    # The retries were admitted where the parked call waits, whichever process HAProxy sent them to.
    assert all(f.worker == r.worker for f, r in zip(firsts, retries, strict=True))


def test_a_killed_process_costs_no_audit_row_and_no_double_run_and_clients_go_on(cluster, nas):
    token = create_grant("survivor", [Server.objects.get(slug="nas")], None).token
    victim_port, victim = next(iter(cluster.gateways.items()))
    failures: list[str] = []
    listed: list[int] = []
    reconnects = {n: 0 for n in range(4)}

    async def agent(n: int):
        """30 calls; a call in flight on the killed process may fail, and the Python SDK's client ends when a
        POST's connection drops: then the agent connects again, once at most."""
        ok, i = 0, 0
        while i < 30:
            try:
                async with session_client(cluster, "nas", token) as c:
                    await c.list_tools()
                    listed.append(n)
                    while i < 30:
                        i += 1
                        try:
                            result = await c.call_tool("system_info", {})
                            ok += not result.is_error
                        except MCPError as exc:  # the one call in flight on the killed process
                            failures.append(f"{n}:{i}: {exc}")
                        await asyncio.sleep(0.05)
            except Exception as exc:  # noqa: BLE001 - the client ended with the connection it was using
                failures.append(f"{n}: client ended: {exc!r}"[:300])
                reconnects[n] += 1
                assert reconnects[n] <= 1, failures
        return ok

    async def run():
        agents = asyncio.gather(*(agent(n) for n in range(4)))
        while len(listed) < 4:  # killed mid-calls, with every agent's session open
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        victim.send_signal(signal.SIGKILL)
        return await agents

    oks = asyncio.run(asyncio.wait_for(run(), 180))
    victim.wait(timeout=10)
    assert len(failures) <= 8, failures  # at most the call each agent had in flight there, and its client
    assert sum(oks) >= 116, (oks, failures)
    deadline = time.monotonic() + 30  # peers settle the dead process's rows within three heartbeats
    rows = Call.objects.filter(grant__name="survivor")
    while rows.filter(outcome="pending").exists():
        assert time.monotonic() < deadline, "the killed process's rows were never settled"
        time.sleep(0.5)
    # Every success has its row; a call whose answer was lost with its client's connection has one too (it ran,
    # once); the calls in flight on the killed process are settled interrupted; nothing ran twice (120 attempts).
    ok_rows, interrupted = rows.filter(outcome="ok").count(), rows.filter(outcome="interrupted").count()
    assert sum(oks) <= ok_rows <= sum(oks) + len(failures)
    assert interrupted <= 4 and rows.count() == ok_rows + interrupted <= 120
    cluster.start_gateway(victim_port)  # back for the next test
    cluster.wait_ready()


def test_sigterm_drains_calls_in_flight_and_leaves_nothing_pending(cluster, ev):
    token = create_grant("drained", [Server.objects.get(slug="ev")], None).token
    port, proc = list(cluster.gateways.items())[-1]

    async def slow_call(n: int):
        # Straight to the process being stopped: its calls are the ones in flight when SIGTERM arrives.
        url = f"http://127.0.0.1:{port}/mcp/ev/"
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
        async with httpx2.AsyncClient(headers=headers, timeout=90) as http:
            opened = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "d", "version": "1"}}})
            session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "trigger-long-running-operation", "arguments": {"duration": 4, "steps": 2}}}
            answer = await http.post(url, json=call, headers=session)
            assert answer.status_code == 200, answer.text
            body = answer.json() if answer.headers["content-type"].startswith("application/json") else json.loads(
                [line for line in answer.text.splitlines() if line.startswith("data: ") and '"id":2' in
                 line.replace(" ", "")][-1][6:])
            return body

    async def run():
        calls = asyncio.gather(*(slow_call(n) for n in range(20)), return_exceptions=True)
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(Call.objects.filter(grant__name="drained").count) < 20:
            assert time.monotonic() < deadline, "the calls never started"
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with httpx2.AsyncClient(timeout=10) as http:  # the draining process takes no new work
            ready = await http.get(f"http://127.0.0.1:{port}/readyz")
            refused = await http.post(f"http://127.0.0.1:{port}/mcp/ev/", json={"jsonrpc": "2.0", "id": 1,
                                                                               "method": "ping"},
                                      headers={"Authorization": f"Bearer {token}"})
        return await calls, ready, refused

    results, ready, refused = asyncio.run(asyncio.wait_for(run(), 120))
    assert ready.status_code == 503 and ready.json()["draining"] is True
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    proc.wait(timeout=40)
    rows = Call.objects.filter(grant__name="drained")
    assert not rows.filter(outcome="pending").exists()
    assert rows.filter(outcome="ok").count() == 20, list(rows.values_list("outcome", "error"))
    assert all(isinstance(r, dict) and "result" in r and not r["result"].get("isError") for r in results), results
    del cluster.gateways[port]
