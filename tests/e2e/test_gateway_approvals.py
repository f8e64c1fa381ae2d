"""Holding a call for a person's approval, end to end: a real gateway, the simulator, the SDK client."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time

import httpx2
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.calls import approvals
from gateway.grants import create_grant
from gateway.models import Approval, Call, PolicyVersion, Server
from tests.conftest import ROOT, free_port, start_gateway, stop, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOLD_S = 4
POLICY = {"version": "1", "default": "deny", "risk": {"read": {}},
          "tools": {"dataset_create": {"action": "approve"}}}


@pytest.fixture(scope="module")
def held_gateway(django_db_setup, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("approvals"), {"PORTCULLIS_APPROVAL_HOLD_S": str(HOLD_S)})
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def simulator():
    """One simulator over HTTP that every upstream session shares, so its own counts see every run."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "truenas_sim", "--http", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}/mcp"
    stop(proc)


@pytest.fixture
def token(held_gateway, simulator):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport="http", url=simulator)
    call_command("refresh_tools", "truenas", stdout=io.StringIO())
    policies.apply(server, POLICY, actor="test")
    return create_grant("agent", [server], None).token


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_user("alice", password="a-long-password-1", is_staff=True)


def client(gw, token):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return Client(streamable_http_client(gw.url("truenas"), http_client=http), mode="legacy", cache=None)


def text(result) -> str:
    return result.content[0].text


def wait_for_pending(count: int = 1, timeout: float = 20) -> list[Approval]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = list(Approval.objects.filter(state="pending").order_by("id"))
        if len(pending) >= count:
            return pending
        time.sleep(0.05)  # bounded poll for the gateway process to create the approval
    raise AssertionError(f"no {count} pending approval(s) within {timeout} s")


def in_background(coro_fn):
    """Run an async client in a thread; returns (thread, box) where box[0] gets the result."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(asyncio.wait_for(coro_fn(), 60))))
    thread.start()
    return thread, box


def upstream_runs(simulator_url: str, dataset: str) -> int:
    """How many times the simulator itself ran dataset_create for this name successfully."""
    async def go():
        async with Client(simulator_url, mode="legacy") as c:
            return json.loads((await c.read_resource("truenas://debug/calls")).contents[0].text)

    return sum(1 for entry in asyncio.run(go())["recent"] if entry["tool"] == "dataset_create"
               and entry["arguments"].get("name") == dataset and entry["outcome"] == "ok")


def test_an_approved_call_is_released_and_returns_the_real_result(held_gateway, token, operator):
    async def call():
        async with client(held_gateway, token) as c:
            return await c.call_tool("dataset_create", {"name": "tank/approved"})

    thread, box = in_background(call)
    approval = wait_for_pending()[0]
    approvals.decide(approval, user=operator, approve=True, now=timezone.now())
    thread.join(30)
    result = box[0]
    assert not result.is_error and "tank/approved" in text(result)
    row = Call.objects.get(tool_name="dataset_create")
    assert (row.decision, row.outcome) == ("approve", "ok")
    assert row.approval.decided_by == operator and row.approval.state == "used"


def test_a_denied_call_returns_the_approvers_reason(held_gateway, token, operator):
    async def call():
        async with client(held_gateway, token) as c:
            return await c.call_tool("dataset_create", {"name": "tank/nope"})

    thread, box = in_background(call)
    approvals.decide(wait_for_pending()[0], user=operator, approve=False, reason="not on a Friday",
                     now=timezone.now())
    thread.join(30)
    assert box[0].is_error and text(box[0]) == "denied by an operator (alice): not on a Friday"
    assert Call.objects.get(tool_name="dataset_create").outcome == "refused"


def test_no_decision_in_time_tells_the_agent_to_call_again_and_the_approved_call_then_runs_once(
        held_gateway, token, operator, simulator):
    async def first():
        async with client(held_gateway, token) as c:
            started = time.monotonic()
            result = await c.call_tool("dataset_create", {"name": "tank/later"})
            return result, time.monotonic() - started

    result, waited = asyncio.run(first())
    approval = Approval.objects.get()
    assert result.is_error and text(result).startswith(f"approval pending (id {approval.public_id[:8]}…)")
    assert HOLD_S - 0.5 < waited < HOLD_S + 3
    approvals.decide(approval, user=operator, approve=True, now=timezone.now())

    async def again():
        async with client(held_gateway, token) as c:
            ran = await c.call_tool("dataset_create", {"name": "tank/later"})
            repeat = await c.call_tool("dataset_create", {"name": "tank/later"})
            return ran, repeat

    ran, repeat = asyncio.run(again())
    assert not ran.is_error and "tank/later" in text(ran)
    assert repeat.is_error and text(repeat).startswith("approval pending")  # a second run needs a new approval
    assert upstream_runs(simulator, "tank/later") == 1
    assert Approval.objects.filter(state="pending").count() == 1


def test_other_arguments_need_their_own_approval(held_gateway, token, operator):
    async def call(name):
        async with client(held_gateway, token) as c:
            return await c.call_tool("dataset_create", {"name": name})

    thread, box = in_background(lambda: call("tank/one"))
    approvals.decide(wait_for_pending()[0], user=operator, approve=True, now=timezone.now())
    thread.join(30)
    assert not box[0].is_error
    other = asyncio.run(call("tank/two"))
    assert other.is_error and text(other).startswith("approval pending")
    assert Approval.objects.filter(state="pending").count() == 1
    assert Approval.objects.filter(state="used").count() == 1


def test_two_identical_concurrent_calls_use_one_approval_once(held_gateway, token, operator, simulator):
    async def call():
        async with client(held_gateway, token) as c:
            return await c.call_tool("dataset_create", {"name": "tank/race"})

    first = asyncio.run(call())  # held until the window ends: leaves a pending approval
    assert first.is_error
    approvals.decide(Approval.objects.get(), user=operator, approve=True, now=timezone.now())

    async def both():
        return await asyncio.gather(call(), call())

    results = asyncio.run(asyncio.wait_for(both(), 60))
    assert sorted(r.is_error for r in results) == [False, True]
    assert upstream_runs(simulator, "tank/race") == 1


def test_approve_and_always_allow_writes_a_grant_policy_version(held_gateway, token, operator):
    async def call():
        async with client(held_gateway, token) as c:
            return await c.call_tool("dataset_create", {"name": "tank/always"})

    thread, box = in_background(call)
    approvals.decide(wait_for_pending()[0], user=operator, approve=True, always=True, now=timezone.now())
    thread.join(30)
    assert not box[0].is_error
    own = PolicyVersion.objects.get(grant__name="agent", is_active=True)
    assert own.document["tools"]["dataset_create"] == {} and own.created_by == operator
    next_call = asyncio.run(call())
    assert next_call.is_error is False or "exists" in text(next_call)  # ran without asking (the dataset exists)
    assert Approval.objects.count() == 1


def test_an_approval_is_void_when_the_policy_changes(held_gateway, token, operator):
    async def call():
        async with client(held_gateway, token) as c:
            return await c.call_tool("dataset_create", {"name": "tank/void"})

    asyncio.run(call())
    approval = Approval.objects.get()
    approvals.decide(approval, user=operator, approve=True, now=timezone.now())
    server = Server.objects.get(slug="truenas")
    policies.apply(server, {**POLICY, "show_denied": True}, actor="test")
    after = asyncio.run(call())
    assert after.is_error and text(after).startswith("approval pending")
    approval.refresh_from_db()
    assert approval.state == "expired" and "changed" in approval.reason
