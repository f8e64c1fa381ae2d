"""A server's session settings in the dashboard: which questions it may ask agents (sampling, elicitation, roots)
and whether sessions are isolated, set in the form, recorded as changes, shown with the sessions and upstream
processes the gateway processes report."""

from __future__ import annotations

from django.utils import timezone

from gateway.grants import create_grant
from gateway.models import GatewayProcess, McpSession, Server, ServerChange

FORM = {"name": "Remote", "transport": "http", "url": "http://127.0.0.1:9/mcp", "timeout_seconds": "60",
        "enabled": "on", "headers": "", "env": "", "command": ""}


def test_the_form_sets_what_a_server_may_ask_and_isolation_and_the_change_is_recorded(staff_client, http_server):
    page = staff_client.get("/servers/remote/edit/").content.decode()
    for name in ("allow_sampling", "allow_elicitation", "allow_roots"):
        assert f'name="{name}"' in page and "checked" in page.split(f'name="{name}"')[1].split(">")[0]
    response = staff_client.post("/servers/remote/edit/", {**FORM, "allow_elicitation": "on", "allow_roots": "on",
                                                           "isolate_sessions": "on"})
    assert response.status_code == 302
    server = Server.objects.get(slug="remote")
    assert (server.allow_sampling, server.allow_elicitation, server.allow_roots, server.isolate_sessions) == (
        False, True, True, True)
    assert server.allowed_client_capabilities() == {"elicitation", "roots"}
    lines = ServerChange.objects.filter(server=server).latest("created_at").details
    assert "may ask agents to sample: no" in lines and "isolates sessions: yes" in lines


def test_the_server_page_shows_its_sessions_and_the_upstream_processes_of_every_gateway_process(staff_client,
                                                                                               truenas):
    grant = create_grant("agent", [truenas], None).grant
    now = timezone.now()
    for n, private in enumerate([False, False, True]):
        McpSession.objects.create(id=f"s{n}", grant=grant, server=truenas, token_digest="d",
                                  protocol_version="2025-11-25", private=private, last_seen_at=now)
    McpSession.objects.create(id="ended", grant=grant, server=truenas, token_digest="d",
                              protocol_version="2025-11-25", ended_at=now)
    GatewayProcess.objects.create(id="host:1:a", heartbeat_at=now, upstreams={"truenas": 2})
    GatewayProcess.objects.create(id="host:2:b", heartbeat_at=now, upstreams={"truenas": 1, "other": 4})
    GatewayProcess.objects.create(id="host:3:dead", heartbeat_at=now - timezone.timedelta(minutes=5),
                                  upstreams={"truenas": 9})
    page = staff_client.get("/servers/truenas/").content.decode()
    line = page.split('class="server-sessions">')[1].split("</dd>")[0]
    assert "3 open (1 with an upstream session of their own)" in line
    assert "3 upstream processes on 2 gateway processes" in line
    assert "sampling, elicitation, roots" in page
