"""A draft in shadow under live traffic from a real client (issue 15, part 2): a gateway process, the TrueNAS
simulator, the Python SDK's client in both eras. The draft limits cloud_backup_run to 3 a minute; the policy in
force allows 10: every backup runs, and the shadow records exactly the calls it would have refused."""

from __future__ import annotations

import asyncio
import io
import sys
import time

import httpx2
import pytest
from django.core.management import call_command
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway import policies, shadows
from gateway.grants import create_grant
from gateway.models import Call, Server, ShadowDivergence
from tests.policy.policy_cases import SEED

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TIGHTER = {**SEED, "tools": {"cloud_backup_run": {"limits": [
    {"counter": "cloud_backup_run_rate", "window": "minute", "max": 3, "scope": "grant"}]}}}


def test_a_shadow_draft_records_what_it_would_have_refused_under_live_traffic(gateway):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport="stdio",
                                   command=[sys.executable, "-m", "truenas_sim"])
    call_command("refresh_tools", "truenas", stdout=io.StringIO())
    policies.apply(server, SEED, actor="test")
    token = create_grant("agent", [server], None).token
    shadow = shadows.start(server, TIGHTER)
    if time.time() % 60 > 52:  # ten calls in one minute window
        time.sleep(61 - time.time() % 60)

    async def five(mode: str) -> list[bool]:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with Client(streamable_http_client(gateway.url("truenas"), http_client=http), mode=mode,
                          cache=None) as client:
            return [not (await client.call_tool("cloud_backup_run", {"id": 1})).is_error for _ in range(5)]

    assert asyncio.run(five("legacy")) == [True] * 5  # never enforced
    assert asyncio.run(five("auto")) == [True] * 5
    ran = list(Call.objects.filter(tool_name="cloud_backup_run", outcome="ok").order_by("pk").values_list("pk",
                                                                                                      flat=True))
    assert len(ran) == 10
    rows = list(ShadowDivergence.objects.filter(shadow=shadow).order_by("pk"))
    assert [r.call_id for r in rows] == ran[3:]  # the 4th call on: over the draft's 3 a minute
    assert {(r.actual, r.shadow_kind) for r in rows} == {("allow", "limit")}
    assert shadows.seen(shadow) == 10
