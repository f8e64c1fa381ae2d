"""The MCP Inspector CLI (a real Node client) through the gateway, over Streamable HTTP and legacy SSE."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from django.core.management import call_command

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, Server
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INSPECTOR = ROOT / "node_modules" / ".bin" / "mcp-inspector-cli"


@pytest.fixture
def token(gateway):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport="stdio",
                                   command=[sys.executable, "-m", "truenas_sim"])
    call_command("refresh_tools", "truenas", stdout=io.StringIO())
    policies.apply(server, {"version": "1", "default": "deny", "risk": {"read": {}},
                             "resources": {"truenas://*": {}}}, actor="test")
    return create_grant("inspector", [server], None).token


def inspector(gateway, token, transport, *args) -> dict:
    if not INSPECTOR.exists():
        raise AssertionError(f"{INSPECTOR} is missing: run `make test` (it installs the test peers)")
    url = gateway.url("truenas") + ("sse" if transport == "sse" else "")
    # The CLI reads ../package.json relative to its working directory: run it from a folder of the project.
    proc = subprocess.run([str(INSPECTOR), "--cli", url, "--transport", transport, "--header",
                           f"Authorization: Bearer {token}", *args], cwd=ROOT / "tests", capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout[proc.stdout.index("{"):])


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_the_inspector_cli_lists_calls_and_is_refused_through_the_gateway(gateway, token, transport):
    names = [t["name"] for t in inspector(gateway, token, transport, "--method", "tools/list")["tools"]]
    assert "pool_list" in names and "dataset_delete" not in names and "cloud_backup_run" not in names
    allowed = inspector(gateway, token, transport, "--method", "tools/call", "--tool-name", "pool_list")
    assert not allowed.get("isError") and "tank" in allowed["content"][0]["text"]
    denied = inspector(gateway, token, transport, "--method", "tools/call", "--tool-name", "dataset_delete",
                       "--tool-arg", "id=tank/media")
    assert denied["isError"] and denied["content"][0]["text"].startswith("denied by policy")
    resources = inspector(gateway, token, transport, "--method", "resources/list")
    assert any(r["uri"].startswith("truenas://") for r in resources["resources"])
    assert Call.objects.filter(tool_name="pool_list", outcome="ok").count() == 1
