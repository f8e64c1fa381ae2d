"""Bulk actions as operators use them (issue 13, items 2 and 10): they act only on the selected tools the filter
shows and say so first; a bulk deny says what changes for agents, keeps the tier's reason or asks for one, and
writes the fewest rules; a new page starts with nothing selected. At desktop and phone widths."""

from __future__ import annotations

import json
import sys

import pytest

from gateway import policies
from gateway.models import Server, Tool
from tests.browser.test_dashboard_flow import htmx_done, staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REASON = "destructive tools are disabled; ask an operator"
TOOLS = [("pool_list", "read"), ("disk_list", "read"), ("pool_scrub_status", "read"),
         ("dataset_delete", "destructive"), ("pool_destroy", "destructive"), ("service_restart", "execute")]


@pytest.fixture
def catalogue(transactional_db):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport="stdio",
                                   command=[sys.executable, "-m", "truenas_sim"])
    for position, (name, category) in enumerate(TOOLS):
        Tool.objects.create(server=server, name=name, description=f"{name} does things",
                            input_schema={"type": "object"}, definition={"name": name},
                            definition_hash=f"{position:064d}", approved_hash=f"{position:064d}",
                            risk_category=category, risk_level="low", position=position)
    policies.apply(server, {"version": "1", "default": "deny", "risk": {
        "read": {}, "destructive": {"action": "deny", "on_deny": REASON}}}, actor="test")
    return server


def draft(page, base) -> dict:
    text = page.request.get(f"{base}/servers/truenas/policy/export/?draft=1").text()
    return json.loads(text)


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_bulk_actions_change_only_what_is_shown_and_say_what_changes_for_agents(
        live_server, catalogue, page, shoot, django_user_model, width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    page.goto(f"{base}/servers/truenas/policy/")
    bar = page.locator("#selection-bar")

    # Select the three read tools, then search for a tool that is not one of them.
    htmx_done(page, lambda: page.select_option("#filters select[name=category]", "read"), "/policy/", "GET")
    htmx_done(page, lambda: page.get_by_role("button", name="Select all 3 shown").click(), "/policy/select/")
    htmx_done(page, lambda: page.select_option("#filters select[name=category]", ""), "/policy/", "GET")
    htmx_done(page, lambda: page.fill("#filters input[name=q]", "service_restart"), "/policy/", "GET")
    assert "3 selected · 1 of 6 shown · 3 selected not shown" in bar.inner_text()
    htmx_done(page, lambda: page.click(".bulk button.act-deny"), "/policy/bulk/")
    assert "hidden by the search or filters" in page.locator("#bulk-error").inner_text()
    shoot(page, f"13-2-bulk-selection-hidden-{width}")
    assert draft(page, base).get("tools") is None  # nothing was denied
    page.console_errors.clear()  # the refusal's 400, which the browser logs

    # Search "pool": one selected read tool is shown, two are not; deny asks first and names what changes.
    htmx_done(page, lambda: page.fill("#filters input[name=q]", "pool"), "/policy/", "GET")
    htmx_done(page, lambda: page.click(".bulk button.act-deny"), "/policy/bulk/")
    panel = page.locator("#bulk-panel")
    text = panel.inner_text()
    assert "Deny 2 tools?" in text and "1 more selected tool is hidden by the search or filters" in text
    assert "2 tools change from allow to deny" in text, text
    assert "denied by policy: tool 'pool_list' is denied by rule /tools/pool_list" in text  # what agents would read
    panel.get_by_label("The reason agents read when they call them").fill("pools are being migrated")
    shoot(page, f"13-2-bulk-confirm-{width}", full_page=True)
    htmx_done(page, lambda: panel.get_by_role("button", name="Deny 2 tools").click(), "/policy/bulk/")
    assert "2 tools changed in the draft (2 rules written, 0 removed)" in page.locator("#bulk-panel").inner_text()
    tools = draft(page, base)["tools"]
    assert tools == {"pool_list": {"action": "deny", "on_deny": "pools are being migrated"},
                     "pool_scrub_status": {"action": "deny", "on_deny": "pools are being migrated"}}
    assert "0 selected" in bar.inner_text()  # acted on: the selection is done

    # Denying the destructive tier's tools again changes nothing for agents and writes nothing.
    htmx_done(page, lambda: page.fill("#filters input[name=q]", ""), "/policy/", "GET")
    htmx_done(page, lambda: page.select_option("#filters select[name=category]", "destructive"), "/policy/", "GET")
    htmx_done(page, lambda: page.get_by_role("button", name="Select all 2 shown").click(), "/policy/select/")
    htmx_done(page, lambda: page.click(".bulk button.act-deny"), "/policy/bulk/")
    text = panel.inner_text()
    assert "2 tools already do this: nothing changes" in text and "Nothing changes for agents" in text
    assert panel.get_by_role("button", name="Deny 2 tools").count() == 0
    shoot(page, f"13-10-bulk-nothing-changes-{width}")
    panel.get_by_role("button", name="Close").click()
    assert page.locator("#bulk-panel").inner_text() == ""
    assert set(draft(page, base)["tools"]) == {"pool_list", "pool_scrub_status"}

    # A new page starts with nothing selected.
    page.reload()
    assert page.locator("#selection-bar").inner_text().startswith("0 selected")
    assert not page.console_errors, page.console_errors
