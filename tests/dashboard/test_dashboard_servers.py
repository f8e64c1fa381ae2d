"""Servers: register, edit (secrets write-only), disable, refresh with a visible new / changed / gone result."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from gateway.models import Server, Tool

TIME_SERVER = [str(Path(sys.executable).with_name("mcp-server-time")), "--local-timezone", "UTC"]


def register(client, **fields):
    data = {"slug": "time", "name": "", "transport": "stdio", "command": "", "url": "", "env": "", "headers": "",
            "timeout_seconds": "30", "enabled": "on", **fields}
    return client.post("/servers/new/", data)


def test_it_lists_servers_with_transport_health_risk_counts_and_configs(staff_client, truenas):
    body = staff_client.get("/servers/").content.decode()
    assert "279 tools" in body and "destructive" in body
    assert "http://127.0.0.1:8000/mcp/truenas/" in body
    assert "claude mcp add --transport http truenas" in body and "&lt;grant token&gt;" in body
    assert 'data-copy="cfg-truenas-0"' in body


def test_it_registers_a_stdio_server_with_a_write_only_secret(superuser_client, db):
    response = register(superuser_client, command=shlex.join(TIME_SERVER), env="TZ_TOKEN=abcdefghijkl-secret-0001")
    assert response.status_code == 302 and response["Location"] == "/servers/time/"
    server = Server.objects.get(slug="time")
    assert server.command == TIME_SERVER and server.env == {"TZ_TOKEN": "abcdefghijkl-secret-0001"}
    page = superuser_client.get("/servers/time/").content.decode()
    assert "abcdefghijkl-secret-0001" not in page and "•••0001" in page


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"command": ""}, "command", "needs the command"),
    ({"command": "x 'unclosed"}, "command", "cannot split"),
    ({"transport": "http", "url": "ftp://x"}, "url", "http:// or https://"),
    ({"transport": "http", "url": "http://user:pw@host/mcp"}, "url", "credentials in the headers"),
    ({"command": "x", "headers": "A=b"}, "headers", "headers are for HTTP"),
    ({"command": "x", "env": "no-equals-sign"}, "env", "KEY=VALUE"),
    ({"slug": "Bad_Slug", "command": "x"}, "slug", "lowercase letters"),
], ids=["no-command", "bad-quotes", "not-http", "url-credentials", "stdio-headers", "env-syntax", "slug"])
def test_it_says_which_field_to_fix(superuser_client, db, fields, field, message):
    response = register(superuser_client, **fields)
    body = response.content.decode()
    assert response.status_code == 200 and message in body
    assert body.index(message) > body.index(f'name="{field}"')
    assert not Server.objects.filter(slug="time").exists()


def test_it_keeps_stored_secrets_when_the_box_is_left_empty_and_clears_them_on_request(staff_client, http_server):
    data = {"name": "Remote", "transport": "http", "url": "http://127.0.0.1:9/mcp", "timeout_seconds": "60",
            "enabled": "on", "headers": "", "env": "", "command": ""}
    staff_client.post("/servers/remote/edit/", data)
    assert Server.objects.get(slug="remote").headers == http_server.headers
    staff_client.post("/servers/remote/edit/", {**data, "headers": "X-Key=new-value-123456789"})
    assert Server.objects.get(slug="remote").headers == {"X-Key": "new-value-123456789"}
    staff_client.post("/servers/remote/edit/", {**data, "clear_secrets": "on"})
    assert Server.objects.get(slug="remote").headers == {}


def test_it_disables_and_enables_a_server(staff_client, truenas):
    staff_client.post("/servers/truenas/enabled/", {"enabled": "0", "confirm": "1"})
    assert not Server.objects.get(slug="truenas").enabled
    assert "disabled" in staff_client.get("/servers/truenas/").content.decode()
    staff_client.post("/servers/truenas/enabled/", {"enabled": "1"})
    assert Server.objects.get(slug="truenas").enabled


@pytest.mark.slow
def test_registering_a_real_stdio_server_lists_its_tools_and_refresh_shows_what_is_new(superuser_client, db):
    registered = register(superuser_client, command=shlex.join(TIME_SERVER))
    assert registered.status_code == 302
    body = superuser_client.get("/servers/time/").content.decode()
    assert "registered time and listed its 2 tools" in body and "● ok" in body
    assert Tool.objects.filter(server__slug="time").count() == 2
    Tool.objects.filter(server__slug="time", name="convert_time").delete()
    again = superuser_client.post("/servers/time/refresh/", follow=True).content.decode()
    assert "Refreshed: 1 new, 0 changed, 0 gone, 1 unchanged" in again and "convert_time" in again


@pytest.mark.slow
def test_test_connection_lists_the_tools_and_saves_nothing(superuser_client, db):
    fields = {"slug": "time", "name": "", "transport": "stdio", "command": shlex.join(TIME_SERVER), "env": "",
              "url": "", "headers": "", "timeout_seconds": "30", "enabled": "on", "test": "1"}
    body = superuser_client.post("/servers/new/", fields).content.decode()
    assert "connected: it lists 2 tools (get_current_time, convert_time)" in body
    assert not Server.objects.filter(slug="time").exists()
    failing = {**fields, "command": f"{sys.executable} -c 'import sys; sys.exit(3)'", "timeout_seconds": "10"}
    body = superuser_client.post("/servers/new/", failing).content.decode()
    assert "could not connect:" in body and not Server.objects.filter(slug="time").exists()


@pytest.mark.slow
def test_registering_a_server_that_cannot_be_listed_says_so_and_what_to_do(superuser_client, db):
    register(superuser_client, command=f"{sys.executable} -c 'import sys; sys.exit(3)'", timeout_seconds="10")
    body = superuser_client.get("/servers/time/").content.decode()
    assert "registered time, but its tools could not be listed" in body and "press Refresh tools" in body


@pytest.mark.slow
def test_it_shows_a_failed_refresh_with_the_error_and_changes_nothing(superuser_client, db):
    register(superuser_client, command=f"{sys.executable} -c 'import sys; sys.exit(3)'", timeout_seconds="10")
    body = superuser_client.post("/servers/time/refresh/", follow=True).content.decode()
    assert "refresh failed, nothing changed" in body and "▲ error" in body
