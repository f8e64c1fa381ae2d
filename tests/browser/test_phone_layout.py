"""The dashboard on a phone (issue 13, item 6): at 390×844 no page overflows sideways, and approving a held call is a
single-column card with thumb-sized buttons that stay on screen. Desktop pages are checked for overflow too, and
every page for symbols that need an emoji font (item 13: they render as boxes without one; icons are inline SVG)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gateway import policies
from gateway.grants import create_grant, revoke
from gateway.models import Call
from tests.browser.test_dashboard_flow import staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = ["/", "/servers/nas/", "/servers/nas/edit/", "/servers/nas/tools/", "/servers/nas/tools/share_create/",
         "/servers/nas/policy/", "/servers/nas/policy/versions/", "/servers/nas/policy/tools/share_create/",
         "/servers/nas/policy/globs/new/", "/servers/nas/policy/preview/", "/grants/", "/grants/new/",
         "/grants/agent-a/", "/calls/", "/calls/{call}/", "/approvals/", "/servers/new/", "/notifications/",
         "/notifications/new/"]
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const scrolls = e => {  // inside a box that scrolls sideways on its own (a wide table): not the page's overflow
    for (let p = e.parentElement; p; p = p.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(p).overflowX) && p.clientWidth <= width) return true;
    }
    return false;
  };
  const wide = [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.right > width + 1 && !scrolls(e);
  }).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className).slice(0, 5);
  return {scroll: document.documentElement.scrollWidth, width, wide};
}"""
# Symbols every common text font has; anything else above U+2000 in a page needs a font the person may not have.
TYPOGRAPHY = set("…—–·→←↓↑●○▲▥−“”‘’×•≤≥")
SYMBOLS = "() => [...new Set([...document.body.innerText].filter(c => c.codePointAt(0) > 0x2000))].join('')"


@pytest.mark.parametrize("width,height", [(390, 844), (1440, 900)], ids=["phone", "desktop"])
def test_no_page_overflows_sideways(live_server, hold, nas, page, shoot, django_user_model, width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    hold()
    create_grant("a-grant-with-a-rather-long-name-for-phones", [nas["server"]], None)
    revoke(create_grant("gone", [nas["server"]], None).grant, timezone.now())
    create_grant("old", [nas["server"]], timezone.now() - timedelta(days=1))
    policies.apply(nas["server"], {"version": "1", "default": "deny", "tools": {
        "share_create": {"action": "approve", "limits": [{"counter": "c", "window": "minute", "max": 5,
                                                          "scope": "grant"}]}}}, actor="test")
    call = Call.objects.first()
    for path in PAGES:
        page.goto(base + path.format(call=call.pk))
        found = page.evaluate(OVERFLOW)
        shoot(page, f"13-6-{width}{path.format(call='call').replace('/', '-').rstrip('-') or '-home'}", full_page=True)
        assert found["scroll"] <= found["width"] and not found["wide"], (path, found)
        assert set(page.evaluate(SYMBOLS)) <= TYPOGRAPHY, (path, page.evaluate(SYMBOLS))
    assert not page.console_errors, page.console_errors


def test_approving_from_a_phone_is_one_column_with_thumb_sized_buttons(live_server, hold, page, shoot,
                                                                       django_user_model):
    base = staff_signed_in(page, live_server, django_user_model, 390, 844)
    approval = hold()
    page.goto(f"{base}/approvals/")
    card = page.locator(f"#approval-{approval.public_id}")
    box = card.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    buttons = [card.get_by_role("button", name=name, exact=True) for name in
               ("Approve", "Approve & always allow for this grant…", "Deny")]
    boxes = [b.bounding_box() for b in buttons]
    for b in boxes:
        assert b["height"] >= 44 and b["x"] >= 0 and b["x"] + b["width"] <= 390, boxes
        assert b["width"] >= 0.8 * (box["width"] - 40), boxes  # each as wide as the card: one column
    assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]  # stacked, the one people mean most on top
    shoot(page, "13-6-approval-phone", full_page=True)
    page.get_by_label(f"Reason for {approval.public_id}").fill("ok from my phone")
    buttons[0].click()
    page.wait_for_selector("text=approved")
