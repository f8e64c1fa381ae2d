"""resources/read, prompts/get and completion/complete go through the policy and the audit log like tool calls:
under a lockdown nothing is listed or read; a rule allows a URI pattern or a prompt; every governed request is an
audit row. Real gateway, real upstreams (the TrueNAS simulator: truenas://users, server-everything: prompts and
completions), the real Python SDK in both eras."""

from __future__ import annotations

import asyncio
import sys

import httpx2
import pytest
from mcp import Client, MCPError, types
from mcp.client.streamable_http import streamable_http_client

from gateway.models import Call
from gateway.protocol.jsonrpc import POLICY_DENIED
from tests.e2e.test_gateway_peers import EVERYTHING, register, require

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LOCKDOWN = {"version": "1", "default": "allow", "hide": ["*"]}
POOLS_ONLY = {"version": "1", "default": "deny", "resources": {"truenas://pools": {}}}


def agent(gateway, slug, token, mode):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return Client(streamable_http_client(gateway.url(slug), http_client=http), mode=mode, cache=None)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def refused(call) -> str:
    with pytest.raises(MCPError) as info:
        await call
    assert info.value.code == POLICY_DENIED
    return info.value.message


@pytest.mark.parametrize("mode", ["legacy", "auto"], ids=["session-era", "stateless-era"])
def test_a_lockdown_lists_and_reads_nothing_and_every_read_is_audited(gateway, mode):
    slug = f"nas-{mode}"
    token = register(slug, LOCKDOWN, transport="stdio", command=[sys.executable, "-m", "truenas_sim"])

    async def go():
        async with agent(gateway, slug, token, mode) as c:
            listed = (await c.list_resources()).resources
            templates = (await c.list_resource_templates()).resource_templates
            message = await refused(c.read_resource("truenas://users"))
            return listed, templates, message

    listed, templates, message = run(go())
    assert listed == [] and templates == []
    assert "hides everything" in message
    row = Call.objects.get(server_slug=slug)
    assert row.tool_name == "resources/read truenas://users" and row.outcome == "refused" and row.rule == "/hide"


def test_a_rule_allows_one_uri_and_the_others_stay_refused(gateway):
    token = register("nas-pools", POOLS_ONLY, transport="stdio", command=[sys.executable, "-m", "truenas_sim"])

    async def go():
        async with agent(gateway, "nas-pools", token, "legacy") as c:
            listed = [str(r.uri) for r in (await c.list_resources()).resources]
            pools = await c.read_resource("truenas://pools")
            message = await refused(c.read_resource("truenas://users"))
            return listed, pools, message

    listed, pools, message = run(go())
    assert listed == ["truenas://pools"]
    assert pools.contents and "tank" in pools.contents[0].text
    assert "not allowed by /resources" in message
    rows = {r.tool_name: r.outcome for r in Call.objects.filter(server_slug="nas-pools")}
    assert rows == {"resources/read truenas://pools": "ok", "resources/read truenas://users": "refused"}


def test_prompts_and_completions_follow_the_prompt_rules(gateway):
    policy = {"version": "1", "default": "deny", "prompts": {"simple-prompt": {}}}
    token = register("ev-prompts", policy, transport="stdio", command=[require(EVERYTHING)])

    async def go():
        async with agent(gateway, "ev-prompts", token, "legacy") as c:
            listed = [p.name for p in (await c.list_prompts()).prompts]
            simple = await c.get_prompt("simple-prompt")
            denied = await refused(c.get_prompt("completable-prompt", {"department": "Engineering"}))
            completion = await refused(c.complete(types.PromptReference(type="ref/prompt", name="completable-prompt"),
                                                  {"name": "department", "value": "E"}))
            return listed, simple, denied, completion

    listed, simple, denied, completion = run(go())
    assert listed == ["simple-prompt"] and simple.messages
    assert "completable-prompt" in denied and "completable-prompt" in completion
    outcomes = sorted((r.tool_name, r.outcome) for r in Call.objects.filter(server_slug="ev-prompts"))
    assert outcomes == [("completion/complete completable-prompt", "refused"),
                        ("prompts/get completable-prompt", "refused"), ("prompts/get simple-prompt", "ok")]
