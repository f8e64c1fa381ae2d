"""Issue 17 end to end, on two real gateway processes sharing the suite's database (PostgreSQL in CI) and the TrueNAS
simulator (stdio) behind them, called by the Python SDK in both eras:

/metrics, read with prometheus_client's own parser from each process, sums to exactly what the audit table holds,
by server, tool, decision and outcome; scrapes without the token are refused. (The hash chains of concurrent
writers: tests/e2e/test_audit_chain_live.py.)
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter as Tally

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from gateway.models import Call, Server
from tests.conftest import start_gateway, stop
from tests.e2e.test_gateway_peers import register

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "scrape-token-for-tests-0123456789"
POLICY = {"version": "1", "default": "deny",
          "tools": {"system_info": {}, "dataset_delete": {"action": "deny", "reason": "never from an agent"},
                    "pool_list": {"limits": [{"counter": "pools", "window": "hour", "max": 6, "scope": "grant"}]}}}


def two_gateways(tmp_path_factory):
    env = {"PORTCULLIS_METRICS_TOKEN": METRICS_TOKEN, "PORTCULLIS_HEARTBEAT_S": "1"}
    first = start_gateway(tmp_path_factory.mktemp("evidence-a"), env)
    try:
        second = start_gateway(tmp_path_factory.mktemp("evidence-b"), env)
    except BaseException:
        stop(first.proc)
        raise
    return first, second


@pytest.fixture(scope="module")
def gateways(django_db_setup, django_db_blocker, tmp_path_factory):
    running = two_gateways(tmp_path_factory)
    yield running
    for gateway in running:
        stop(gateway.proc)


@pytest.fixture
def token():
    return register_nas()


def register_nas(policy: dict = POLICY) -> str:
    """The TrueNAS simulator (stdio) as server `nas` under `policy`; its grant's token."""
    return register("nas", policy, transport=Server.Transport.STDIO, command=[sys.executable, "-m", "truenas_sim"])


def client(gateway, token: str, mode: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return Client(streamable_http_client(gateway.url("nas"), http_client=http), mode=mode, cache=None)


async def calls_through(gateway, token: str, mode: str, plan: list[tuple[str, dict]]) -> list[bool]:
    async with client(gateway, token, mode) as c:
        return [not (await c.call_tool(name, arguments)).is_error for name, arguments in plan]


PLAN = [("system_info", {}), ("pool_list", {}), ("dataset_delete", {"name": "tank/a"}), ("pool_list", {}),
        ("no_such_tool", {}), ("pool_list", {}), ("pool_list", {})]


def scrape(gateway, token: str | None = METRICS_TOKEN) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.get(f"{gateway.base}/metrics", headers=headers, timeout=10)


def call_counts(text: str) -> Tally:
    counts = Tally()
    for family in text_string_to_metric_families(text):
        if family.name == "portcullis_calls":
            for sample in family.samples:
                if sample.name == "portcullis_calls_total":
                    labels = sample.labels
                    counts[(labels["server"], labels["tool"], labels["decision"], labels["outcome"])] += sample.value
    return counts


def test_metrics_of_both_processes_sum_to_the_audit_table(gateways, token):
    first, second = gateways

    async def run():
        return await asyncio.gather(calls_through(first, token, "legacy", PLAN),
                                    calls_through(second, token, "auto", PLAN))

    asyncio.run(asyncio.wait_for(run(), 120))
    table = Tally()
    for server, tool, decision, outcome, refusal in Call.objects.values_list(
            "server_slug", "tool_name", "decision", "outcome", "refusal"):
        table[(server, "(unknown)" if refusal == "unknown_tool" else tool, decision, outcome)] += 1
    assert sum(table.values()) == 2 * len(PLAN) and not Call.objects.filter(outcome="pending").exists()
    assert table[("nas", "pool_list", "deny", "refused")] == 2  # 8 asked, 6 allowed by the limit

    scraped, limit_hits = Tally(), 0
    for gateway in gateways:
        response = scrape(gateway)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=")
        scraped.update(call_counts(response.text))
        text = response.text
        limit_hits += sum(sample.value for family in text_string_to_metric_families(text)
                          for sample in family.samples if sample.name == "portcullis_limit_hits_total")
        assert "portcullis_gateway_seconds_bucket" in text and "portcullis_upstream_seconds_count" in text
        assert 'portcullis_upstream_connections{server="nas"} 1.0' in text
        assert 'portcullis_approvals_pending' in text and "process_cpu_seconds_total" in text
        assert "no_such_tool" not in text and METRICS_TOKEN not in text and token not in text
    assert {k: v for k, v in scraped.items() if v} == dict(table)
    assert limit_hits == 2


@pytest.mark.parametrize("sent", [None, "wrong-token"])
def test_a_scrape_without_the_token_is_refused(gateways, sent):
    response = scrape(gateways[0], sent)
    assert response.status_code == 401 and "portcullis_calls" not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
