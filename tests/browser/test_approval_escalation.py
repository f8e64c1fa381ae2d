"""A limit that escalates to a person instead of refusing (`on_exceed: approve`), end to end: a real gateway, the
TrueNAS simulator (stdio), the SDK client. Ten `cloud_backup_run` calls in a minute run; the 11th is held, appears
live on the approvals page in chromium, and runs once when a person approves it: the simulator's own counter says
eleven ran, the counter stays at its max, and the audit row names the approver."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.models import Approval, Call, Counter, Server
from tests.browser.test_approval_e2e import PASSWORD, prepare_truenas, sign_in
from tests.conftest import start_gateway, stop

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOLD_S = 40
LIVE_MS = 10_000
POLICY = {"version": "1", "default": "deny", "resources": {"truenas://debug/*": {}},
          "tools": {"cloud_backup_run": {"limits": [{"counter": "backups", "window": "hour", "max": 10,
                                                     "scope": "grant", "on_exceed": "approve"}]}}}


@pytest.fixture
def gateway(tmp_path):
    running = start_gateway(tmp_path, {"PORTCULLIS_APPROVAL_HOLD_S": str(HOLD_S)})
    yield running
    stop(running.proc)


@pytest.fixture
def token(gateway, worker, django_user_model):
    return prepare_truenas(worker, django_user_model, POLICY)


def agent(gateway, token: str, box: list, held: threading.Event) -> threading.Thread:
    """One session: ten backups, then the 11th (held until a person decides), then the simulator's own count."""

    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=HOLD_S + 30)
        async with Client(streamable_http_client(gateway.url("truenas"), http_client=http), mode="legacy",
                          cache=None) as c:
            first = [await c.call_tool("cloud_backup_run", {"id": 1}) for _ in range(10)]
            held.set()
            eleventh = await c.call_tool("cloud_backup_run", {"id": 1})
            report = await c.read_resource("truenas://debug/calls")
            return first, eleventh, json.loads(report.contents[0].text)["counts"]

    thread = threading.Thread(target=lambda: box.append(asyncio.run(asyncio.wait_for(go(), HOLD_S + 90))))
    thread.start()
    return thread


def test_the_11th_call_waits_for_a_person_and_runs_once_when_approved(gateway, token, page, shoot):
    sign_in(page, gateway.base)
    box, held = [], threading.Event()
    thread = agent(gateway, token, box, held)
    card = "#approvals-pending article.approval"
    page.wait_for_selector(card, timeout=30_000)  # appeared without a reload
    assert held.is_set()
    text = page.text_content(card)
    assert "cloud_backup_run" in text
    shoot(page, "16-escalation-01-held")
    page.click(f"{card} button[value=approve]")
    thread.join(HOLD_S + 60)
    first, eleventh, counts = box[0]
    assert all(not r.is_error for r in first)
    assert not eleventh.is_error, eleventh.content[0].text
    assert counts["cloud_backup_run"] == 11  # the upstream ran it once more, once
    rows = list(Call.objects.filter(tool_name="cloud_backup_run").order_by("id"))
    assert [r.outcome for r in rows] == ["ok"] * 11 and [r.decision for r in rows] == ["allow"] * 10 + ["approve"]
    assert rows[-1].rule == "/tools/cloud_backup_run/limits/0" and rows[-1].approval.decided_by.username == "operator"
    assert rows[-1].approval.state == "used" and Approval.objects.count() == 1
    assert Counter.objects.get().n == 10  # the counter was never pushed past its max
    page.wait_for_selector("#approvals-history article.approval", timeout=LIVE_MS)
    shoot(page, "16-escalation-02-approved")


TWO_PEOPLE = {"version": "1", "default": "deny", "risk": {"critical": {"action": "approve", "approvers": 2}},
              "tools": {"dataset_create": {"action": "approve", "approvers": 2}}}


def sign_in_as(page, base: str, name: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
    page.goto(f"{base}/approvals/")
    page.wait_for_selector("body[data-live-state=open]", timeout=LIVE_MS)


def test_two_people_must_approve_and_the_same_person_twice_does_not_release(gateway, token, page, browser,
                                                                             shoot, django_user_model, worker):
    def two_people():
        django_user_model.objects.create_user("second", password=PASSWORD, is_staff=True)
        policies.apply(Server.objects.get(slug="truenas"), TWO_PEOPLE, actor="test")

    worker.submit(two_people).result(timeout=30)
    sign_in_as(page, gateway.base, "operator")
    box: list = []

    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=HOLD_S + 30)
        async with Client(streamable_http_client(gateway.url("truenas"), http_client=http), mode="legacy",
                          cache=None) as c:
            return await c.call_tool("dataset_create", {"name": "tank/two-people"})

    thread = threading.Thread(target=lambda: box.append(asyncio.run(asyncio.wait_for(go(), HOLD_S + 60))))
    thread.start()
    card = "#approvals-pending article.approval"
    page.wait_for_selector(card, timeout=30_000)
    assert "2 different people must approve" in page.text_content(card)
    page.click(f"{card} button[value=approve]")
    page.wait_for_selector(f"{card} .approvers strong", timeout=LIVE_MS)
    assert "approved by operator" in page.text_content(f"{card} .approvers")
    shoot(page, "16-two-people-01-first")
    page.click(f"{card} button[value=approve]")  # the same person again: refused, still waiting
    page.wait_for_selector(f"{card} .error", timeout=LIVE_MS)
    assert "a second, different person must approve" in page.text_content(f"{card} .error")
    assert thread.is_alive() and not box
    shoot(page, "16-two-people-02-same-person-refused")

    other = browser.new_context(viewport={"width": 390, "height": 844})  # the second person, on a phone
    second = other.new_page()
    try:
        sign_in_as(second, gateway.base, "second")
        second.wait_for_selector(card, timeout=LIVE_MS)
        assert "Approve as second person" in second.text_content(card)
        shoot(second, "16-two-people-03-second-person-phone")
        second.click(f"{card} button[value=approve]")
        thread.join(HOLD_S + 30)
    finally:
        other.close()
    result = box[0]
    assert not result.is_error and "tank/two-people" in result.content[0].text
    row = worker.submit(lambda: Call.objects.get(tool_name="dataset_create")).result(timeout=10)
    assert row.outcome == "ok" and row.reason.startswith("approved by operator and second (approval ")
