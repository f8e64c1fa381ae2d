"""A grant's own rules are a layer on the server's policy (issue 13, item 3): after "Approve & always allow", a
change saved to the server's policy still reaches that grant; both builders say who adds rules and whose rule
decides each row. At desktop and phone widths."""

from __future__ import annotations

import pytest

from gateway import policies
from gateway.models import Tool
from tests.browser.test_confirmations import ask_to_always_allow
from tests.browser.test_dashboard_flow import htmx_done, staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_server_changes_reach_a_grant_after_always_allow(live_server, hold, nas, page, shoot, django_user_model,
                                                         width, height):
    Tool.objects.create(server=nas["server"], name="share_delete", description="Delete an SMB share",
                        input_schema={"type": "object"}, definition={"name": "share_delete"},
                        definition_hash="b" * 64, approved_hash="b" * 64, risk_category="destructive",
                        risk_level="high", position=1)
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    ask_to_always_allow(page, base, hold())
    htmx_done(page, lambda: page.get_by_role("button", name="Approve and always allow").click(), "/decide/")

    # The server's builder says a grant adds rules; a change saved there tells who else gets it.
    page.goto(f"{base}/servers/nas/policy/")
    assert "1 grant adds rules on top of this policy: agent-a (1 rule)" in page.inner_text(".layers")
    htmx_done(page, lambda: page.get_by_label("rule for share_delete", exact=True).select_option("approve"),
              "/policy/")
    page.get_by_role("button", name="Save as new version").click()
    assert "1 grant with rules of its own get it too, with those rules on top: agent-a" in page.inner_text("main")
    page.get_by_role("button", name="Save v2").click()
    page.wait_for_selector("text=activated version v2")

    # The grant gets the server's change, and keeps its own rule.
    decides = policies.applicable(nas["server"], nas["grant"]).document
    assert decides["tools"] == {"share_create": {}, "share_delete": {"action": "approve"}}
    page.goto(f"{base}/servers/nas/policy/?grant=agent-a")
    assert "agent-a's own rules" in page.inner_text(".layers") and "policy v2" in page.inner_text(".layers")
    own, server = (page.locator(f"tr:has(a:text-is('{name}'))") for name in ("share_create", "share_delete"))
    assert "agent-a's rule" in own.inner_text() and "server's policy" in server.inner_text()
    assert "approve" in server.inner_text()
    shoot(page, f"13-3-grant-rules-{width}", full_page=True)
    page.goto(f"{base}/grants/agent-a/")
    assert "the server's policy v2 + its own 1 rule" in page.inner_text("main")
    assert not page.console_errors, page.console_errors
