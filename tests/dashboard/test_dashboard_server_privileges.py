"""What a stdio server runs, runs on the gateway's host: only administrators set it, within the launch rules, and
every change to a server is recorded and shown (who, when, what; never a secret value)."""

from __future__ import annotations

import html
import io
import shlex
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from gateway.models import Server, ServerChange

TIME_SERVER = [str(Path(sys.executable).with_name("mcp-server-time")), "--local-timezone", "UTC"]
ATTACK = "sh -c 'id; cat var/secret-keys.json'"


def register(client, **fields):
    data = {"slug": "time", "name": "", "transport": "stdio", "command": "", "url": "", "env": "", "headers": "",
            "timeout_seconds": "30", "enabled": "on", **fields}
    return client.post("/servers/new/", data)


def edit(client, server: Server, **fields):
    data = {"name": server.name, "transport": server.transport, "command": shlex.join(server.command),
            "url": server.url, "env": "", "headers": "", "timeout_seconds": str(server.timeout_seconds),
            "enabled": "on", **fields}
    return client.post(f"/servers/{server.slug}/edit/", data)


def test_a_staff_user_who_is_not_an_administrator_cannot_register_a_stdio_command(staff_client, db):
    response = register(staff_client, command=ATTACK)
    body = response.content.decode()
    assert response.status_code == 200 and "only an administrator can set what a stdio server runs" in body
    assert not Server.objects.filter(slug="time").exists()


def test_a_staff_user_cannot_add_an_environment_to_an_existing_stdio_server(staff_client, truenas):
    before = (truenas.command, truenas.env)
    edit(staff_client, truenas, env="PYTHONPATH=/tmp/x", command=ATTACK)
    truenas.refresh_from_db()
    assert (truenas.command, truenas.env) == before


def test_a_staff_user_cannot_turn_an_http_server_into_a_stdio_one(staff_client, http_server):
    response = edit(staff_client, http_server, transport="stdio", command=ATTACK, url="")
    assert "only an administrator" in response.content.decode()
    http_server.refresh_from_db()
    assert http_server.transport == "http"


def test_a_staff_user_still_edits_what_does_not_run_on_the_host(staff_client, truenas):
    edit(staff_client, truenas, name="NAS", timeout_seconds="45")
    truenas.refresh_from_db()
    assert (truenas.name, truenas.timeout_seconds) == ("NAS", 45)


def test_a_user_given_the_permission_may_register_a_stdio_server(staff_client, staff, db):
    staff.user_permissions.add(Permission.objects.get(codename="change_server_command"))
    response = register(staff_client, command=shlex.join(TIME_SERVER))
    assert response.status_code == 302 and Server.objects.get(slug="time").command == TIME_SERVER


@pytest.mark.parametrize("key", ["PYTHONPATH", "PYTHONSTARTUP", "LD_PRELOAD", "LD_LIBRARY_PATH", "NODE_OPTIONS",
                                 "PATH", "BASH_ENV", "pythonpath"])
def test_environment_keys_that_change_how_programs_start_are_refused_for_administrators_too(
        superuser_client, db, key):
    response = register(superuser_client, command=shlex.join(TIME_SERVER), env=f"{key}=/tmp/x")
    body = response.content.decode()
    assert response.status_code == 200 and f"{key} changes how the program or its interpreter starts" in body
    assert body.index("changes how the program") > body.index('name="env"')
    assert not Server.objects.filter(slug="time").exists()


def test_an_environment_key_allowed_in_settings_is_accepted(superuser_client, db, settings):
    settings.PORTCULLIS_STDIO_ENV_KEYS_ALLOWED = ["PYTHONPATH"]
    response = register(superuser_client, command=shlex.join(TIME_SERVER), env="PYTHONPATH=/opt/tools")
    assert response.status_code == 302 and Server.objects.get(slug="time").env == {"PYTHONPATH": "/opt/tools"}


def test_harmless_and_ordinary_keys_are_accepted(superuser_client, db):
    response = register(superuser_client, command=shlex.join(TIME_SERVER),
                        env="PYTHONUNBUFFERED=1\nGITHUB_TOKEN=ghp-abcdefghijklmnop\nGOOGLE_API_KEY=g-123456789")
    assert response.status_code == 302


def test_the_command_allow_list_binds_administrators_and_commands(superuser_client, db, settings):
    settings.PORTCULLIS_STDIO_COMMANDS = [TIME_SERVER[0]]
    response = register(superuser_client, command=ATTACK)
    assert "'sh' is not one of the commands this gateway may start" in html.unescape(response.content.decode())
    assert register(superuser_client, command=shlex.join(TIME_SERVER)).status_code == 302
    with pytest.raises(CommandError, match="not one of the commands"):
        call_command("register_server", "other", "--stdio", ATTACK, stdout=io.StringIO())


def test_register_server_refuses_an_unsafe_environment_key(db):
    with pytest.raises(CommandError, match="LD_PRELOAD changes how the program"):
        call_command("register_server", "time", "--stdio", shlex.join(TIME_SERVER), "--env", "LD_PRELOAD=/tmp/x.so",
                     stdout=io.StringIO())


def test_a_row_with_an_unsafe_key_written_another_way_is_not_started(truenas):
    from gateway.upstream.connect import UpstreamError, stdio_parameters

    truenas.env = {"PYTHONPATH": "/tmp/x"}
    truenas.save()
    with pytest.raises(UpstreamError, match="was not started: PYTHONPATH"):
        stdio_parameters(truenas)


def test_every_change_is_recorded_with_who_and_what_and_shown_without_secret_values(superuser_client, db):
    register(superuser_client, command=shlex.join(TIME_SERVER), env="TZ_TOKEN=abcdefghijkl-secret-0001")
    server = Server.objects.get(slug="time")
    edit(superuser_client, server, env="TZ_TOKEN=abcdefghijkl-secret-0002\nOTHER=zzzzzzzzzzzz-secret-0003",
         timeout_seconds="40")
    superuser_client.post("/servers/time/enabled/", {"enabled": "0", "confirm": "1"})
    call_command("register_server", "time", "--update", "--stdio", shlex.join(TIME_SERVER), stdout=io.StringIO())
    changes = list(ServerChange.objects.filter(server=server).order_by("pk"))
    assert [c.actor for c in changes][:3] == ["root-admin"] * 3 and changes[3].actor.startswith("cli:register_server")
    assert changes[0].details[0].startswith("registered: stdio ") and "TZ_TOKEN" in changes[0].details[0]
    assert changes[1].details == ["timeout (s): 30 → 40", "env OTHER added", "env TZ_TOKEN changed"]
    assert changes[2].details == ["disabled: every call is refused"]
    assert "env OTHER removed" in changes[3].details and "enabled" in changes[3].details
    page = superuser_client.get("/servers/time/").content.decode()
    assert "env TZ_TOKEN changed" in page and "root-admin" in page
    assert "secret-000" not in page
    stored = " ".join(" ".join(c.details) + c.summary for c in changes)
    assert "secret-000" not in stored


def test_a_new_destination_does_not_get_the_old_ones_credentials(staff_client, http_server):
    response = edit(staff_client, http_server, url="http://127.0.0.1:9/other-path")
    assert response.status_code == 302
    assert Server.objects.get(slug="remote").headers == http_server.headers  # same host: kept
    response = edit(staff_client, http_server, url="http://listener.example:8080/mcp")
    http_server.refresh_from_db()
    assert http_server.headers == {}
    assert "stored environment and headers were removed" in staff_client.get("/servers/remote/").content.decode()
    edit(staff_client, http_server, url="http://other.example/mcp", headers="X-Api-Key=entered-again-12345")
    http_server.refresh_from_db()
    assert http_server.headers == {"X-Api-Key": "entered-again-12345"}
