"""The gateway end to end: a real daphne, the real TrueNAS simulator upstream, the real `mcp` SDK client."""

from __future__ import annotations

import asyncio
import io
import json
import sys

import httpx2
import pytest
from django.core.management import call_command
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, Server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POLICY = {
    "version": "1", "default": "deny",
    "resources": {"truenas://debug/*": {}},  # how many calls reached the simulator, read by the tests
    "risk": {"read": {}, "destructive": {"action": "deny", "on_deny": "destructive tools are off for agents"}},
    "tools": {
        "cloud_backup_run": {"limits": [{"counter": "backup_runs", "window": "day", "max": 3, "scope": "grant"}]},
        "dataset_create": {"arguments": {"properties": {"name": {"pattern": "^tank/agents/"}}}},
    },
}


@pytest.fixture
def truenas(gateway):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport=Server.Transport.STDIO,
                                   command=[sys.executable, "-m", "truenas_sim"])
    call_command("refresh_tools", "truenas", stdout=io.StringIO())
    policies.apply(server, POLICY, actor="test")
    return server


@pytest.fixture
def token(truenas):
    return create_grant("agent", [truenas], None).token


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def client(gateway, token, mode="legacy"):
    if mode == "sse":  # the legacy HTTP+SSE transport (2024-11-05)
        url = gateway.base + "/mcp/truenas/sse"
        return Client(sse_client(url, headers={"Authorization": f"Bearer {token}"}), mode="legacy", cache=None)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(gateway.url("truenas"), http_client=http), mode=mode, cache=None)


def direct():
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "truenas_sim"]), mode="legacy")


def text(result) -> str:
    return result.content[0].text


@pytest.mark.parametrize("mode", ["legacy", "auto", "sse"], ids=["session-era", "stateless-era", "legacy-sse"])
def test_it_lists_only_the_tools_the_grant_may_call(gateway, token, mode):
    async def go():
        async with client(gateway, token, mode) as c:
            return [t.name for t in (await c.list_tools()).tools]

    names = run(go())
    assert "dataset_list" in names and "cloud_backup_run" in names and "dataset_create" in names
    assert "dataset_delete" not in names and "system_reboot" not in names  # destructive: denied
    assert "service_start" not in names  # execute, not listed in the policy: default deny
    assert names == sorted(names, key=names.index)  # upstream order kept


@pytest.mark.parametrize("mode", ["legacy", "auto", "sse"], ids=["session-era", "stateless-era", "legacy-sse"])
def test_an_allowed_call_returns_exactly_what_the_upstream_returns(gateway, token, mode):
    async def go():
        async with client(gateway, token, mode) as c, direct() as d:
            via = await c.call_tool("pool_list", {})
            straight = await d.call_tool("pool_list", {})
            return via, straight

    via, straight = run(go())
    assert not via.is_error
    assert via.content == straight.content


def test_a_denied_call_is_refused_with_the_reason_and_never_reaches_the_upstream(gateway, token):
    async def go():
        async with client(gateway, token) as c:
            refused = await c.call_tool("dataset_delete", {"id": "tank/media", "recursive": True})
            calls = json.loads((await c.read_resource("truenas://debug/calls")).contents[0].text)
            return refused, calls

    refused, calls = run(go())
    assert refused.is_error
    assert text(refused) == "denied by policy: destructive tools are off for agents"
    assert "dataset_delete" not in json.dumps(calls)
    row = Call.objects.get(tool_name="dataset_delete")
    assert (row.decision, row.outcome, row.rule) == ("deny", "refused", "/risk/destructive")


def test_the_call_after_the_limit_is_refused_with_the_time_to_wait(gateway, token):
    async def go():
        async with client(gateway, token) as c:
            return [await c.call_tool("cloud_backup_run", {"id": 1}) for _ in range(4)]

    results = run(go())
    assert [r.is_error for r in results] == [False, False, False, True]
    assert text(results[3]).startswith("rate limit backup_runs exceeded: 3 per day, retry in ")
    assert Call.objects.filter(tool_name="cloud_backup_run", outcome="ok").count() == 3
    assert Call.objects.filter(tool_name="cloud_backup_run", refusal="limit").count() == 1


def test_bad_arguments_are_refused_and_the_upstream_state_proves_nothing_ran(gateway, token):
    async def go():
        async with client(gateway, token) as c:
            refused = await c.call_tool("dataset_create", {"name": "tank/media/evil"})
            allowed = await c.call_tool("dataset_create", {"name": "tank/agents"})
            listing = text(await c.call_tool("dataset_list", {}))
            return refused, allowed, listing

    refused, allowed, listing = run(go())
    assert refused.is_error and text(refused) == "argument 'name' must match ^tank/agents/"
    assert "tank/media/evil" not in listing
    assert not allowed.is_error or "tank/agents" in text(allowed)


def test_every_call_has_an_audit_row_with_redacted_arguments(gateway, token):
    secret = "ghp_" + "s" * 36

    async def go():
        async with client(gateway, token) as c:
            await c.call_tool("pool_list", {"note": f"token {secret}", "password": "hunter2"})
            await c.call_tool("dataset_delete", {"id": "x", "api_key": "k-123"})

    run(go())
    rows = list(Call.objects.order_by("id"))
    assert [(r.tool_name, r.decision) for r in rows] == [("pool_list", "allow"), ("dataset_delete", "deny")]
    dump = json.dumps([r.arguments for r in rows]) + gateway.log()
    assert secret not in dump and "hunter2" not in dump and "k-123" not in dump
    assert rows[0].outcome in ("ok", "tool_error") and rows[0].latency_ms is not None


@pytest.mark.parametrize("name", ["Pool_list", "POOL_LIST", "pool_lіst", "pool_list "],
                         ids=["case", "upper", "cyrillic-i", "trailing-space"])
def test_a_name_that_only_looks_like_an_allowed_tool_is_unknown(gateway, token, name):
    async def go():
        async with client(gateway, token) as c:
            return await c.call_tool(name, {})

    result = run(go())
    assert result.is_error and text(result).startswith("unknown tool")
