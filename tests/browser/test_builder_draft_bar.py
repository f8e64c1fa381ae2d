"""The builder as operators use it (issue 13): after a change to one tool's row, the draft bar that came back with
it works — "Save as new version" saves and "Discard draft" discards — at desktop and phone widths."""

from __future__ import annotations

import sys

import pytest

from gateway import policies
from gateway.models import PolicyVersion, Server, Tool
from tests.browser.test_dashboard_flow import PASSWORD, htmx_done, sign_in, staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def truenas_with_policy(transactional_db):
    """A catalogue written directly (the browser's event loop is running: no upstream to list)."""
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport="stdio",
                                   command=[sys.executable, "-m", "truenas_sim"])
    for position, (name, category) in enumerate([("pool_list", "read"), ("dataset_delete", "destructive")]):
        Tool.objects.create(server=server, name=name, description=name, input_schema={"type": "object"},
                            definition={"name": name}, definition_hash=str(position) * 64,
                            approved_hash=str(position) * 64, risk_category=category, risk_level="low",
                            position=position)
    policies.apply(server, {"version": "1", "default": "deny", "risk": {"read": {}}}, actor="test")
    return server


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_save_and_discard_work_after_a_per_row_change(live_server, truenas_with_policy, page, shoot,
                                                      django_user_model, width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    page.goto(f"{base}/servers/truenas/policy/?q=pool_list")
    rule = page.get_by_label("rule for pool_list", exact=True)
    htmx_done(page, lambda: rule.select_option("deny"), "/policy/")
    bar = page.locator("#draft-status")
    assert "Draft: 1 change" in bar.inner_text()
    shoot(page, f"13-1-builder-row-changed-{width}")
    page.get_by_role("button", name="Save as new version").click()
    page.get_by_role("button", name="Save v2").click()  # after saying what it saves (item 5)
    page.wait_for_selector("text=activated version v2")
    assert PolicyVersion.objects.get(server=truenas_with_policy, is_active=True).document["tools"]["pool_list"] == {
        "action": "deny"}

    rule = page.get_by_label("rule for pool_list", exact=True)
    htmx_done(page, lambda: rule.select_option("allow"), "/policy/")
    page.get_by_role("button", name="Discard draft").click()
    page.get_by_role("button", name="Discard the draft").click()
    page.wait_for_function("() => !document.querySelector('#draft-status.dirty')")
    assert "Draft:" not in page.locator("#draft-status").inner_text()
    shoot(page, f"13-1-builder-discarded-{width}")
    assert not page.console_errors, page.console_errors


@pytest.mark.parametrize("path,field,value,target", [
    ("/servers/truenas/tools/", "#id_q", "pool", "/tools/"),
    ("/calls/", "#id_q", "pool", "/calls/"),
    ("/servers/truenas/policy/", "#filters input[name=q]", "pool", "/policy/"),
], ids=["catalogue", "call-log", "builder"])
@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_back_after_filtering_shows_the_whole_page_not_a_fragment(live_server, truenas_with_policy, page, shoot,
                                                                  django_user_model, path, field, value, target,
                                                                  width, height):
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True)
    base = live_server.url
    page.set_viewport_size({"width": width, "height": height})
    sign_in(page, base)
    page.goto(f"{base}{path}")
    htmx_done(page, lambda: page.fill(field, value), target, "GET")
    page.wait_for_function(f"() => location.search.includes('{value}')")  # the filtered URL was pushed
    page.goto(f"{base}/grants/")  # somewhere else, then Back
    page.go_back()
    page.wait_for_load_state()
    assert page.locator("nav").count() >= 1 and page.locator("h1").count() == 1, page.content()[:500]
    assert page.locator("link[rel=stylesheet]").count() >= 1
    shoot(page, f"13-4-back-{target.strip('/')}-{width}")
