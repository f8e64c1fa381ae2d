"""A stateless-era tools/call goes straight to admission on this process's recent copy of the server (no second
database hop to load it: gateway/protocol/relay.py). That copy must never outlive the registration: a changed or
re-registered server is noticed by the admission itself, nothing is written for the stale attempt, and the call
runs on the server as it is now. A real gateway, a real stdio upstream (tests/peers/fault_server.py)."""

from __future__ import annotations

import json

import httpx2
import pytest

from gateway.models import Call
from tests.conftest import register_fault_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def call(gateway, token: str, name: str, arguments: dict) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": META}}
    return httpx2.post(gateway.url("faulty"), content=json.dumps(body).encode(), timeout=30, headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {token}", "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
        "Mcp-Name": name})


def pid_of(response: httpx2.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["result"]["content"][0]["text"].split()[0]


def test_a_changed_registration_is_used_at_once_and_the_stale_attempt_writes_nothing(gateway):
    server, token = register_fault_server()
    first = pid_of(call(gateway, token, "stats", {}))
    assert pid_of(call(gateway, token, "stats", {})) == first  # the recent copy and its link, same process
    server.env = {"SOME_SETTING": "changed"}  # a new registration: the shared link starts the upstream again
    server.save()
    assert pid_of(call(gateway, token, "stats", {})) != first
    assert Call.objects.filter(tool_name="stats").count() == 3
    assert set(Call.objects.values_list("outcome", flat=True)) == {"ok"}


def test_a_server_registered_again_under_the_same_name_is_reached_with_its_own_grants(gateway):
    old, old_token = register_fault_server()
    pid_of(call(gateway, old_token, "ok", {}))
    old.delete()
    new, new_token = register_fault_server()
    assert pid_of(call(gateway, new_token, "ok", {"text": "again"})) == "ok:"
    refused = call(gateway, old_token, "ok", {})
    assert refused.status_code == 403 and "does not cover" in refused.text  # the old grant covers the old one only
    rows = Call.objects.filter(server=new)
    assert rows.count() == 1 and rows.get().outcome == "ok"


def test_a_revoked_grant_is_refused_on_its_next_call_through_the_recent_copy(gateway):
    from django.utils import timezone

    from gateway.grants import revoke
    from gateway.models import Grant

    server, token = register_fault_server()
    pid_of(call(gateway, token, "ok", {}))
    revoke(Grant.objects.get(servers=server), timezone.now())
    assert call(gateway, token, "ok", {}).status_code == 401
    assert Call.objects.count() == 1
