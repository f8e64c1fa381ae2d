"""The landing page (issue 13, "Beyond fixing"): a new gateway gets the checklist from nothing to a controlled
agent, with a policy template one click away; with traffic, the overview shows calls by decision as an SVG chart,
the most called and most refused tools, per grant, and what needs a person. Both widths."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from gateway import policies
from gateway.models import Call, Server, Tool
from tests.browser.test_dashboard_flow import staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WIDTHS = pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])


@WIDTHS
def test_a_new_gateway_is_guided_to_its_first_policy(live_server, transactional_db, page, shoot,
                                                      django_user_model, width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    checklist = page.locator(".checklist")
    assert "From here to an agent that is controlled" in checklist.inner_text()
    assert checklist.locator("a.button.primary").inner_text() == "Register a server"
    shoot(page, f"13-overview-first-run-empty-{width}", full_page=True)
    server = Server.objects.create(slug="nas", name="NAS", transport="stdio",
                                   command=[sys.executable, "-m", "truenas_sim"])
    Tool.objects.create(server=server, name="pool_list", description="List pools", input_schema={"type": "object"},
                        definition={"name": "pool_list"}, definition_hash="a" * 64, approved_hash="a" * 64,
                        risk_category="read", risk_level="low")
    page.reload()
    assert checklist.locator("li.done").count() == 2
    checklist.get_by_role("link", name="Open the policy builder").click()
    page.get_by_role("button", name="Risk tiers (recommended)").click()
    page.wait_for_selector("text=the draft is now the template")
    page.get_by_role("button", name="Save as new version").click()
    page.get_by_role("button", name="Save v1").click()
    page.wait_for_selector("text=activated version v1")
    assert policies.active_version(server).document["risk"]["execute"] == {"action": "approve"}
    page.goto(f"{base}/")
    assert checklist.locator("li.done").count() == 3
    assert checklist.locator("a.button.primary").inner_text() == "Create a grant"
    shoot(page, f"13-overview-first-run-policy-{width}", full_page=True)
    assert not page.console_errors, page.console_errors


@WIDTHS
def test_the_overview_shows_what_agents_did(live_server, hold, nas, page, shoot, django_user_model, width, height):
    now = timezone.now()
    rows = [Call(created_at=now - timedelta(minutes=i % 55), server=nas["server"], server_slug="nas",
                 grant_name=("agent-a", "agent-b")[i % 2], tool_name=("share_create", "share_list", "pool_wipe")[i % 3],
                 decision=("allow", "approve", "deny")[i % 3], outcome="refused" if i % 3 == 2 else "ok")
            for i in range(90)]
    Call.objects.bulk_create(rows)
    hold()
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    page.goto(f"{base}/")
    chart = page.locator(".calls-chart")
    assert "91 calls: 30 allowed, 31 held for approval, 30 refused by policy" in chart.inner_text()
    assert page.locator("svg.chart rect").count() > 10
    assert "pool_wipe" in page.locator("section:has(#refused-title)").inner_text()
    assert "1 held call waiting for approval" in page.inner_text("main")
    shoot(page, f"13-overview-traffic-{width}", full_page=True)
    page.get_by_role("link", name="Last day").click()
    page.wait_for_url(f"{base}/?period=day")
    assert "Calls in the last day" in chart.inner_text()
    assert not page.console_errors, page.console_errors
