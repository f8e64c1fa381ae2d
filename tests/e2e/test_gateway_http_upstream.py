"""A stateless-era Streamable HTTP upstream reached on the gateway's direct path: results, upstream errors,
timeouts (closing the stream cancels) and oversized answers behave as on the SDK path."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time

import httpx2
import pytest
from django.core.management import call_command
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, Server
from tests.conftest import ROOT, free_port, stop, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def upstream():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "peers" / "fault_server.py"), "--http", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}/mcp"
    stop(proc)


@pytest.fixture
def token(gateway, upstream):
    server = Server.objects.create(slug="remote", name="remote", transport="http", url=upstream, timeout_seconds=2)
    call_command("refresh_tools", "remote", stdout=io.StringIO())
    policies.apply(server, {"version": "1", "default": "allow"}, actor="test")
    return create_grant("agent", [server], None).token


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("mode", ["legacy", "auto"], ids=["session-era-agent", "stateless-era-agent"])
def test_calls_on_the_direct_path_answer_like_the_upstream(gateway, token, upstream, mode):
    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with Client(streamable_http_client(gateway.url("remote"), http_client=http), mode=mode,
                          cache=None) as c, Client(upstream, mode="auto") as d:
            fine = await c.call_tool("ok", {"text": "direct"})
            same = await d.call_tool("ok", {"text": "direct"})
            bad = await c.call_tool("sleep", {"seconds": "not a number"})
            started = time.monotonic()
            hung = await c.call_tool("sleep", {"seconds": 20})
            return fine, same, bad, hung, time.monotonic() - started

    fine, same, bad, hung, waited = run(go())
    assert fine.content == same.content and not fine.is_error
    assert bad.is_error  # the upstream's own validation error, passed on
    assert hung.is_error and "did not answer within 2 s" in hung.content[0].text and waited < 3
    outcomes = sorted(Call.objects.values_list("tool_name", "outcome"))
    assert outcomes == [("ok", "ok"), ("sleep", "timeout"), ("sleep", "tool_error")]
