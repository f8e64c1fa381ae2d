"""The seed's exact policy governs the real TrueNAS server's one tool, `truenas(category, action, params)`, as its
actions (issue 14): a real gateway (daphne), the simulator in `--umbrella` mode and in flat mode (both over HTTP,
so that the test reads each simulator's own call counter directly), the Python SDK's client in both protocol eras.
Through the umbrella, `cloud_backup_run` passes 10 times and the 11th is refused with the retry time; every other
action is refused with a reason; the simulator's counter proves nothing else ran; and the flat simulator under the
same policy gives the same decisions and the same audit rows, apart from the tool column.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from contextlib import ExitStack

import httpx2
import pytest
from django.core.management import call_command
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.grants import create_grant
from gateway.models import Call, Tool
from tests.conftest import http_peer, register_http_server
from tests.policy.policy_cases import SEED

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BACKUP = {"category": "data_protection", "action": "cloud_backup_run", "params": {"id": 1}}
OTHERS = [  # (action, category, params): every one refused by the seed policy
    ("dataset_delete", "storage", {"id": "tank/media", "confirm": True}),
    ("pool_list", "storage", {}),
    ("system_reboot", "system", {"confirm": True}),
]
ATTEMPTS = [  # nothing usable in the action argument: refused, never passed on as a call of `truenas`
    {"category": "data_protection", "params": {"id": 1}},
    {"category": "data_protection", "action": ["cloud_backup_run"], "params": {"id": 1}},
    {"category": "data_protection", "action": {"name": "cloud_backup_run"}},
    {"category": "data_protection", "action": "Cloud_Backup_Run", "params": {"id": 1}},
    {"category": "data_protection", "action": "cloud_backup_run\u200b", "params": {"id": 1}},
    {"category": "storage", "action": "cloud_backup_run", "params": {"id": 1}},
    {"category": "storage", "action": "pool_list", "params": {"action": "dataset_delete", "id": "tank/media",
                                                               "confirm": True}},
]


@pytest.fixture
def simulators():
    with ExitStack() as stack:
        urls = [stack.enter_context(http_peer([sys.executable, "-m", "truenas_sim", *flags, "--http", "--port",
                                               "{port}"], env={"TRUENAS_SIM_JOB_SECONDS": "0.2"}, quiet=True))
                for flags in (["--umbrella"], [])]
        umbrella = register_http_server("umbrella", urls[0], SEED, name="TrueNAS (one tool)")
        flat = register_http_server("flat", urls[1], SEED, name="TrueNAS (flat)")
        out = io.StringIO()
        call_command("set_dispatcher", "umbrella", "truenas", "--import", "truenas", stdout=out)
        assert "278 actions in the catalogue" in out.getvalue(), out.getvalue()
        yield umbrella, flat, urls


async def counts(url: str) -> dict:
    """The simulator's own counter of what reached it, read directly (not through the gateway)."""
    async with Client(streamable_http_client(url), mode="legacy", cache=None) as client:
        result = await client.read_resource("truenas://debug/calls")
        return json.loads(result.contents[0].text)["counts"]


def wait_for_a_fresh_minute() -> None:
    """Eleven calls (a few seconds) must fall in one minute window (fixed windows: docs/POLICY.md)."""
    if time.time() % 60 > 52:
        time.sleep(61 - time.time() % 60)


async def run_agent(url: str, token: str, mode: str, calls: list[tuple[str, dict]]) -> list[tuple[bool, str]]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client:
        if mode == "auto":
            assert client.protocol_version == "2026-07-28", client.protocol_version
        tools = (await client.list_tools()).tools
        answers = []
        for name, arguments in calls:
            result = await client.call_tool(name, arguments)
            answers.append((result.is_error, result.content[0].text))
        return [(t.name, t.input_schema) for t in tools], answers


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_seed_policy_governs_the_umbrella_as_it_governs_the_flat_tools(gateway, simulators, mode):
    umbrella, flat, (umbrella_url, flat_url) = simulators
    token = create_grant(f"agent-{mode}", [umbrella, flat], None).token
    wait_for_a_fresh_minute()
    through_umbrella = [("truenas", BACKUP)] * 11 + [
        ("truenas", {"category": category, "action": action, "params": params}) for action, category, params in OTHERS]
    flat_calls = [("cloud_backup_run", BACKUP["params"])] * 11 + [(action, params) for action, _, params in OTHERS]

    listed, answers = asyncio.run(run_agent(gateway.url("umbrella"), token, mode, through_umbrella))
    # Listed: the one tool, its action narrowed to what the seed policy lets the grant call.
    assert [name for name, _ in listed] == ["truenas"]
    schema = listed[0][1]["properties"]
    assert schema["action"]["enum"] == ["cloud_backup_run"] and schema["category"]["enum"] == ["data_protection"]
    assert [error for error, _ in answers[:10]] == [False] * 10, answers[:10]
    assert answers[10][0] and answers[10][1].startswith(
        "rate limit cloud_backup_run_rate exceeded: 10 per minute, retry in "), answers[10]
    for (error, text), (action, _, _) in zip(answers[11:], OTHERS, strict=True):
        assert error and text == f"denied by policy: tool {action!r} is not allowed by this policy (default: deny)"

    wait_for_a_fresh_minute()
    flat_listed, flat_answers = asyncio.run(run_agent(gateway.url("flat"), token, mode, flat_calls))
    assert [name for name, _ in flat_listed] == ["cloud_backup_run"]
    # The same answers; a run's job id is the simulator's, and depends on timing (a call made while the task's
    # job runs joins the one queued behind it), so only that an allowed call started a job is compared.
    def decided(answers: list[tuple[bool, str]]) -> list[tuple[bool, str]]:
        return [(e, t.split(", retry in")[0] if e else "a job id" if t.isdigit() else t) for e, t in answers]
    assert decided(flat_answers) == decided(answers)

    # The same audit rows, apart from the tool column (the umbrella's say which tool they came through).
    def rows(server) -> list[tuple]:
        return [(r.tool_name, r.decision, r.refusal, r.reason.split(", retry in")[0], r.rule,
                 [c.split("|")[0] for c in r.counters], r.outcome)
                for r in Call.objects.filter(server=server, grant_name=f"agent-{mode}").order_by("pk")]
    assert rows(umbrella) == rows(flat) and len(rows(flat)) == 14
    assert set(Call.objects.filter(server=umbrella).values_list("via", flat=True)) == {"truenas"}
    assert set(Call.objects.filter(server=flat).values_list("via", flat=True)) == {""}

    # Each simulator's own counter: only the ten backups ran.
    assert asyncio.run(counts(umbrella_url)) == {"truenas": 10, "cloud_backup_run": 10}
    assert asyncio.run(counts(flat_url)) == {"cloud_backup_run": 10}


def test_nothing_slips_through_the_action_argument(gateway, simulators):
    umbrella, _, (umbrella_url, _) = simulators
    token = create_grant("prober", [umbrella], None).token
    before = asyncio.run(counts(umbrella_url))
    _, answers = asyncio.run(run_agent(gateway.url("umbrella"), token, "legacy",
                                       [("truenas", arguments) for arguments in ATTEMPTS]))
    assert all(error for error, _ in answers), answers
    assert asyncio.run(counts(umbrella_url)) == before  # not one reached the simulator
    refusals = list(Call.objects.filter(grant_name="prober").order_by("pk").values_list("refusal", flat=True))
    assert refusals == ["dispatch", "dispatch", "dispatch", "unknown_tool", "dispatch", "dispatch", "policy"]
    assert Tool.objects.get(server=umbrella, name="Cloud_Backup_Run").held_reason  # queued for a person, held


def test_a_batch_of_calls_lets_nothing_through(gateway, simulators):
    """A JSON-RPC batch (protocol 2025-03-26) of dispatcher calls is refused whole; thirty backups sent at once
    through three sessions: exactly ten run."""
    umbrella, _, (umbrella_url, _) = simulators
    token = create_grant("batcher", [umbrella], None).token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    wait_for_a_fresh_minute()
    with httpx2.Client(timeout=30) as http:
        init = http.post(gateway.url("umbrella"), headers=headers, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                       "clientInfo": {"name": "b", "version": "1"}}})
        headers.update({"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-03-26"})
        http.post(gateway.url("umbrella"), headers=headers,
                  json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        batch = [{"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "truenas", "arguments": a}}
                 for i, a in enumerate([*ATTEMPTS, BACKUP, BACKUP], 1)]
        before = asyncio.run(counts(umbrella_url))
        reply = http.post(gateway.url("umbrella"), headers=headers, content=json.dumps(batch))
    assert reply.status_code == 400 and "batches are not supported" in reply.text
    assert asyncio.run(counts(umbrella_url)) == before and not Call.objects.filter(grant_name="batcher").exists()

    async def burst() -> list[bool]:
        async def one_session() -> list[bool]:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
            async with Client(streamable_http_client(gateway.url("umbrella"), http_client=http), mode="legacy",
                              cache=None) as client:
                results = await asyncio.gather(*[client.call_tool("truenas", BACKUP) for _ in range(10)])
                return [not r.is_error for r in results]
        return [ok for session in await asyncio.gather(*[one_session() for _ in range(3)]) for ok in session]
    assert sum(asyncio.run(burst())) == 10
    assert asyncio.run(counts(umbrella_url)).get("cloud_backup_run", 0) - before.get("cloud_backup_run", 0) == 10


SESSION_LIMIT = {"version": "1", "default": "deny", "tools": {"cloud_backup_run": {"limits": [
    {"counter": "per_session", "window": "hour", "max": 2, "scope": "session"}]}}}


def test_a_session_limit_counts_per_agent_session_in_both_eras(gateway, simulators):
    """scope "session": each session-era session has its own counter; the stateless era has no sessions, so a
    grant's stateless requests share one (docs/POLICY.md, "Scopes")."""
    from gateway import policies

    umbrella, _, _ = simulators
    policies.apply(umbrella, SESSION_LIMIT, actor="test")
    token = create_grant("sessions", [umbrella], None).token
    three = [("truenas", BACKUP)] * 3

    def passed(mode: str) -> list[bool]:
        return [not error for error, _ in asyncio.run(run_agent(gateway.url("umbrella"), token, mode, three))[1]]

    assert passed("legacy") == [True, True, False]
    assert passed("legacy") == [True, True, False]  # a new session: new counters
    assert passed("auto") == [True, True, False]  # the stateless era: one session per grant...
    assert passed("auto") == [False, False, False]  # ... shared by every stateless client of the grant
    keys = {c for r in Call.objects.filter(grant_name="sessions") for c in r.counters}
    assert len({k.split("|")[2] for k in keys}) == 3 and any(k.split("|")[2].endswith("/stateless") for k in keys)


def test_the_actions_can_be_learnt_from_the_servers_own_listing_action(simulators):
    """set_dispatcher --import listing asks the umbrella itself (no arguments: its categories; a category: its
    actions with their descriptions and parameters), as the real TrueNAS server answers."""
    from gateway.models import Server

    _, _, (umbrella_url, _) = simulators
    server = Server.objects.create(slug="learnt", name="learnt", transport=Server.Transport.HTTP, url=umbrella_url,
                                   timeout_seconds=10)
    call_command("refresh_tools", "learnt", stdout=io.StringIO())
    out = io.StringIO()
    call_command("set_dispatcher", "learnt", "truenas", "--import", "listing", stdout=out)
    assert "278 actions in the catalogue" in out.getvalue(), out.getvalue()
    backup = Tool.objects.get(server=server, name="cloud_backup_run")
    assert backup.match == {"/category": "data_protection"} and backup.input_schema["required"] == ["id"]
    from gateway.catalogue.actions import truenas_action_list

    bundled = next(a for a in truenas_action_list() if a["name"] == "cloud_backup_run")
    assert backup.description == bundled["description"]  # the server's own words, as it answered them
    flat = {t.name: t.risk_category for t in Tool.objects.filter(server__slug="umbrella", via__isnull=False)}
    learnt = {t.name: t.risk_category for t in Tool.objects.filter(server=server, via__isnull=False)}
    assert learnt == flat  # classified the same as the project's own list
