"""A server's own secrets (its environment values, its header values) never reach what is recorded or shown about
it: a real stdio upstream that prints its environment on stderr and dies leaves its stderr tail in last_error, the
refresh error and the log, masked."""

from __future__ import annotations

import io
import sys
import textwrap

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from gateway.models import Server
from gateway.redaction import REDACTED, redact_server_text

pytestmark = pytest.mark.django_db(transaction=True)

SECRETS = {"NAS_PASSWORD": "hunter2-but-longer", "MONPWD": "mon1tor!pass", "SNMP_COMMUNITY": "pub1ic-c0mm"}


@pytest.fixture
def leaky_server(tmp_path):
    script = tmp_path / "leaky.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        for key in ("NAS_PASSWORD", "MONPWD", "SNMP_COMMUNITY"):
            print(f"{key}={os.environ.get(key)}", file=sys.stderr)
        print("fatal: cannot start", file=sys.stderr)
        sys.exit(3)
    """))
    server = Server(slug="leaky", name="Leaky", transport=Server.Transport.STDIO, command=[sys.executable, str(script)])
    server.env = SECRETS
    server.save()
    return server


def test_a_dying_stdio_server_that_prints_its_environment_leaves_no_secret_in_last_error(leaky_server, caplog):
    with pytest.raises(CommandError) as info:
        call_command("refresh_tools", "leaky", stdout=io.StringIO(), stderr=io.StringIO())
    leaky_server.refresh_from_db()
    recorded = leaky_server.last_error
    assert "fatal: cannot start" in recorded and "NAS_PASSWORD=" in recorded  # the tail is kept, masked
    for value in SECRETS.values():
        assert value not in recorded
        assert value not in str(info.value)
        assert value not in caplog.text


@pytest.mark.parametrize(("text", "expected"), [
    ("token=abc-secret-123 and Bearer abc-secret-123", f"token={REDACTED} and {REDACTED}"),
    ("key: ZFS-RAW-KEY-0011", f"key: {REDACTED}"),
    ("value 1 and true stay", "value 1 and true stay"),  # too short to be told from ordinary words
])
def test_the_servers_own_header_and_env_values_are_masked_wherever_they_appear(text, expected):
    server = Server(slug="s", transport=Server.Transport.HTTP, url="http://127.0.0.1:9/mcp")
    server.headers = {"Authorization": "Bearer abc-secret-123", "X-Flag": "1"}
    server.env = {"ZFS_KEY": "ZFS-RAW-KEY-0011", "DEBUG": "true"}
    assert redact_server_text(server, text) == expected
