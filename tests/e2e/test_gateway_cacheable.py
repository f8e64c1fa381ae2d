"""Every cacheable method (resources/list, resources/templates/list, resources/read, prompts/list, tools/list)
answers an agent of each era through the gateway, from a session-era upstream (server-everything over stdio) and
from a stateless-era one (tests/peers/stateless_server.py): a 2026-07-28 SDK agent requires `cacheScope` and `ttlMs`
on each, a session-era agent must not see them."""

from __future__ import annotations

import asyncio
import sys

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.grants import create_grant
from gateway.models import Server
from tests.conftest import ROOT, http_peer, register_http_server
from tests.e2e.test_gateway_peers import EVERYTHING, register, require

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POLICY = {"version": "1", "default": "allow"}


@pytest.fixture(scope="module")
def stateless_upstream():
    with http_peer([sys.executable, str(ROOT / "tests" / "peers" / "stateless_server.py"), "{port}"]) as url:
        yield url


@pytest.fixture(params=["session-era upstream", "stateless upstream"])
def upstream(request, gateway):
    if request.param == "session-era upstream":
        return "everything", register("everything", POLICY, transport="stdio", command=[require(EVERYTHING)])
    server = register_http_server("peer", request.getfixturevalue("stateless_upstream"), POLICY)
    return "peer", create_grant("agent-peer", [Server.objects.get(pk=server.pk)], None).token


@pytest.mark.parametrize("mode", ["auto", "legacy"], ids=["stateless agent", "session-era agent"])
def test_every_cacheable_method_answers_an_agent_of_each_era(gateway, upstream, mode):
    slug, token = upstream

    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with Client(streamable_http_client(gateway.url(slug), http_client=http), mode=mode, cache=None) as c:
            tools = await c.list_tools()
            resources = await c.list_resources()
            templates = await c.list_resource_templates()
            prompts = await c.list_prompts()
            read = await c.read_resource(str(resources.resources[0].uri))
            return c.protocol_version, tools, resources, templates, prompts, read

    version, *results = asyncio.run(asyncio.wait_for(go(), 90))
    assert (version == "2026-07-28") == (mode == "auto")
    tools, resources, templates, prompts, read = results
    assert tools.tools and resources.resources and templates.resource_templates and prompts.prompts
    assert read.contents
    for result in results:
        dumped = result.model_dump(by_alias=True, exclude_unset=True)
        if mode == "auto":  # never kept or shared: what an agent sees depends on its grant and the policy
            assert (dumped.get("cacheScope"), dumped.get("ttlMs")) == ("private", 0), type(result).__name__
        else:
            assert "cacheScope" not in dumped and "ttlMs" not in dumped
