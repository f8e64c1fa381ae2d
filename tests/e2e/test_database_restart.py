"""The gateway's database connections are lost (a restart, a failover, an idle timeout, a pooler restart): requests
during the outage are refused with the documented reason (503, never a 500), and the next requests of every kind
succeed without restarting the gateway."""

from __future__ import annotations

import io
import json
import sys

import httpx2
import pytest
from django.core.management import call_command
from django.db import connection

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, Server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture
def token(gateway):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport=Server.Transport.STDIO,
                                   command=[sys.executable, "-m", "truenas_sim"])
    call_command("refresh_tools", "truenas", stdout=io.StringIO())
    policies.apply(server, {"version": "1", "default": "deny", "risk": {"read": {}}}, actor="test")
    return create_grant("may", [server], None).token


class Agent:
    """Raw requests of every kind the endpoint serves."""

    def __init__(self, gateway, token: str) -> None:
        self.gateway, self.token, self.session = gateway, token, None

    def post(self, body: dict, headers: dict | None = None) -> httpx2.Response:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "Authorization": f"Bearer {self.token}", **(headers or {})}
        return httpx2.post(self.gateway.url("truenas"), content=json.dumps(body).encode(), headers=h, timeout=60)

    def initialize(self) -> httpx2.Response:
        response = self.post(INIT)
        if response.status_code == 200:
            self.session = response.headers["mcp-session-id"]
        return response

    def session_request(self, method: str, params: dict) -> httpx2.Response:
        return self.post({"jsonrpc": "2.0", "id": 2, "method": method, "params": params},
                         {"Mcp-Session-Id": self.session, "MCP-Protocol-Version": "2025-11-25"})

    def stateless(self, method: str, params: dict, name: str | None = None) -> httpx2.Response:
        headers = {"Mcp-Method": method, "MCP-Protocol-Version": "2026-07-28"}
        if name is not None:
            headers["Mcp-Name"] = name
        return self.post({"jsonrpc": "2.0", "id": 3, "method": method, "params": {**params, "_meta": MODERN_META}},
                         headers)

    def legacy_sse_opens(self) -> int:
        url = self.gateway.base + "/mcp/truenas/sse"
        with httpx2.stream("GET", url, headers={"Authorization": f"Bearer {self.token}",
                                                 "Accept": "text/event-stream"}, timeout=60) as response:
            return response.status_code

    def every_kind(self) -> dict[str, httpx2.Response | int]:
        out: dict[str, httpx2.Response | int] = {"initialize": self.initialize()}
        out["session tools/list"] = self.session_request("tools/list", {})
        out["session tools/call"] = self.session_request("tools/call", {"name": "pool_list", "arguments": {}})
        out["stateless tools/list"] = self.stateless("tools/list", {})
        out["stateless tools/call"] = self.stateless("tools/call", {"name": "pool_list", "arguments": {}},
                                                     "pool_list")
        out["stateless server/discover"] = self.post({"jsonrpc": "2.0", "id": 4, "method": "server/discover"})
        out["legacy SSE stream"] = self.legacy_sse_opens()
        return out


def _succeeded(kind: str, response: httpx2.Response | int) -> bool:
    if isinstance(response, int):
        return response == 200
    if response.status_code != 200 or "error" in response.json():
        return False
    result = response.json()["result"]
    return not result.get("isError") if "tools/call" in kind else True


def _terminate_the_gateways_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def _allow_connections(allowed: bool) -> None:
    """PostgreSQL refuses this on a connection to the database itself: it goes through the maintenance database."""
    import psycopg

    s = connection.settings_dict
    with psycopg.connect(host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"],
                         password=s["PASSWORD"], dbname="postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{s["NAME"]}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')


@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: `.ci/run` runs the suite on it (SQLite has no connections to terminate; "
                    "tests/calls/test_dbthreads.py breaks the connections of both databases in-process)")


def test_every_kind_of_request_succeeds_right_after_the_gateways_connections_are_terminated(
        postgresql, gateway, token):
    agent = Agent(gateway, token)
    before = agent.every_kind()
    assert all(_succeeded(k, r) for k, r in before.items()), {k: getattr(r, "text", r) for k, r in before.items()}
    assert _terminate_the_gateways_connections() >= 1
    after = agent.every_kind()
    failed = {k: getattr(r, "text", r) for k, r in after.items() if not _succeeded(k, r)}
    assert not failed
    assert "Traceback" not in gateway.log()


def test_during_an_outage_every_request_is_refused_with_the_reason_and_afterwards_all_succeed(
        postgresql, gateway, token):
    agent = Agent(gateway, token)
    assert _succeeded("initialize", agent.initialize())
    open_session = agent.session
    _allow_connections(False)  # what a restart looks like from outside: connections dropped, new ones refused
    try:
        _terminate_the_gateways_connections()
        during = {
            "initialize": Agent(gateway, token).initialize(),
            "session tools/list": agent.session_request("tools/list", {}),
            "stateless tools/list": agent.stateless("tools/list", {}),
            "stateless tools/call": agent.stateless("tools/call", {"name": "pool_list", "arguments": {}},
                                                    "pool_list"),
        }
        session_call = agent.session_request("tools/call", {"name": "pool_list", "arguments": {}})
        legacy = agent.legacy_sse_opens()
    finally:
        _allow_connections(True)
    for kind, response in during.items():
        assert response.status_code in (200, 503), (kind, response.status_code, response.text)
        body = response.json()
        text = body["error"]["message"] if "error" in body else body["result"]["content"][0]["text"]
        assert "unavailable" in text and "try again shortly" in text, (kind, text)
        if response.status_code == 503:
            assert response.headers["retry-after"]
    assert session_call.status_code == 200 and session_call.json()["result"]["isError"]
    assert "audit log unavailable" in session_call.json()["result"]["content"][0]["text"]
    assert legacy == 503
    assert Call.objects.count() == 0  # nothing was forwarded while nothing could be recorded
    agent.session = open_session
    after = agent.every_kind()
    failed = {k: getattr(r, "text", r) for k, r in after.items() if not _succeeded(k, r)}
    assert not failed
    assert "internal error in the MCP endpoint" not in gateway.log()
