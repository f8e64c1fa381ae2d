"""Each call is published as a live event on the channel layer (Redis across processes), for the dashboard."""

from __future__ import annotations

import asyncio
import io
import sys

import httpx2
import pytest
from channels_redis.core import RedisChannelLayer
from django.core.management import call_command
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.events import CALLS_GROUP
from gateway.grants import create_grant
from gateway.models import Call, Server
from tests.conftest import start_gateway, stop

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_gateway(redis_url, django_db_setup, tmp_path):
    gw = start_gateway(tmp_path, {"REDIS_URL": redis_url})
    yield gw
    stop(gw.proc)


def test_every_call_reaches_the_live_log_through_redis(redis_gateway, redis_url):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport="stdio",
                                   command=[sys.executable, "-m", "truenas_sim"])
    call_command("refresh_tools", "truenas", stdout=io.StringIO())
    policies.apply(server, {"version": "1", "default": "deny", "risk": {"read": {}}}, actor="test")
    token = create_grant("live", [server], None).token

    async def go():
        layer = RedisChannelLayer(hosts=[redis_url])
        channel = await layer.new_channel()
        await layer.group_add(CALLS_GROUP, channel)
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with Client(streamable_http_client(redis_gateway.url("truenas"), http_client=http),
                          mode="legacy", cache=None) as c:
            await c.call_tool("pool_list", {})
            await c.call_tool("dataset_delete", {"id": "tank/media"})
        events = []  # several calls' events may share a message (gateway/events.py)
        while len(events) < 3:
            message = await asyncio.wait_for(layer.receive(channel), 5)
            assert message["type"] == "calls.changed"
            events += message["calls"]
        await layer.group_discard(CALLS_GROUP, channel)
        return events

    events = asyncio.run(asyncio.wait_for(go(), 60))
    allowed = Call.objects.get(tool_name="pool_list").pk
    refused = Call.objects.get(tool_name="dataset_delete").pk
    assert events == [[allowed, "truenas", "opened"], [allowed, "truenas", "settled"],
                      [refused, "truenas", "refused"]]
