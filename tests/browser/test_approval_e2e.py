"""Hold for approval end to end: a real MCP client calls a tool that needs approval, a person sees it appear on
the queue in chromium and clicks; the client gets the real result (or the reason), and the audit log says who.

Two gateway processes share the test database and a Redis channel layer: the agent talks to one, the person
uses the dashboard of the other, so the approval crosses processes as it does behind a load balancer.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading

import httpx2
import pytest
from django.core.management import call_command
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Approval, Call, Server
from tests.conftest import start_gateway, stop

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-1"
HOLD_S = 30
LIVE_MS = 10_000
POLICY = {"version": "1", "default": "deny", "risk": {"read": {}},
          "tools": {"dataset_create": {"action": "approve"}}}


@pytest.fixture
def gateways(redis_url, tmp_path):  # noqa: F811 - the imported fixture
    env = {"REDIS_URL": redis_url, "PORTCULLIS_APPROVAL_HOLD_S": str(HOLD_S)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    agent_side, person_side = start_gateway(tmp_path / "a", env), None
    try:
        person_side = start_gateway(tmp_path / "b", env)
        yield agent_side, person_side
    finally:
        stop(agent_side.proc)
        if person_side is not None:
            stop(person_side.proc)


def prepare_truenas(worker, django_user_model, policy: dict) -> str:
    """The staff user `operator`, the TrueNAS simulator (stdio) as server `truenas` under `policy`, and the token
    of its grant `agent` (on the worker thread: refresh_tools runs its own event loop)."""
    django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)

    def prepare():
        server = Server.objects.create(slug="truenas", name="TrueNAS", transport="stdio",
                                       command=[sys.executable, "-m", "truenas_sim"])
        call_command("refresh_tools", "truenas", stdout=io.StringIO())
        policies.apply(server, policy, actor="test")
        return create_grant("agent", [server], None).token

    return worker.submit(prepare).result(timeout=60)


@pytest.fixture
def setup(gateways, worker, django_user_model):
    return prepare_truenas(worker, django_user_model, POLICY)


def call_in_background(url: str, token: str, name: str) -> tuple[threading.Thread, list]:
    box: list = []

    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=HOLD_S + 30)
        async with Client(streamable_http_client(url, http_client=http), mode="legacy", cache=None) as c:
            return await c.call_tool("dataset_create", {"name": name})

    thread = threading.Thread(target=lambda: box.append(asyncio.run(asyncio.wait_for(go(), HOLD_S + 60))))
    thread.start()
    return thread, box


def sign_in(page, base: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
    page.goto(f"{base}/approvals/")
    page.wait_for_selector("body[data-live-state=open]", timeout=LIVE_MS)


def test_a_person_approves_in_the_browser_and_the_agent_gets_the_real_result(gateways, setup, page, shoot):
    agent_side, person_side = gateways
    sign_in(page, person_side.base)
    thread, box = call_in_background(agent_side.url("truenas"), setup, "tank/approved-in-browser")
    card = "#approvals-pending article.approval"
    page.wait_for_selector(card, timeout=LIVE_MS)  # appeared without a reload
    assert "dataset_create" in page.text_content(card)
    shoot(page, "approval-e2e-01-pending")
    page.click(f"{card} button[value=approve]")
    thread.join(HOLD_S + 30)
    result = box[0]
    assert not result.is_error and "tank/approved-in-browser" in result.content[0].text
    row = Call.objects.get(tool_name="dataset_create", outcome="ok")
    assert row.approval.decided_by.username == "operator" and row.approval.state == "used"
    page.wait_for_selector("#approvals-history article.approval.state-used, #approvals-history article.approval",
                           timeout=LIVE_MS)
    shoot(page, "approval-e2e-02-approved")


def test_a_person_denies_in_the_browser_and_the_agent_reads_the_reason(gateways, setup, page):
    agent_side, person_side = gateways
    sign_in(page, person_side.base)
    thread, box = call_in_background(agent_side.url("truenas"), setup, "tank/denied-in-browser")
    card = "#approvals-pending article.approval"
    page.wait_for_selector(card, timeout=LIVE_MS)
    page.fill(f"{card} input[name=reason]", "use the scratch pool instead")
    page.click(f"{card} button[value=deny]")
    thread.join(HOLD_S + 30)
    assert box[0].is_error
    assert box[0].content[0].text == "denied by an operator (operator): use the scratch pool instead"
    assert Approval.objects.get().state == "denied"
