"""Keyboard and screen-reader basics on every page (issue 13, item 12): an axe-core scan (npm axe-core, run in
chromium) finds no critical or serious violation at desktop and phone widths; a skip link leads to the content;
focus stays on the control a person used after an htmx swap; arrowing through a row's select in the builder does
not commit each step (Enter or leaving the select does)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from gateway import policies
from gateway.grants import create_grant, revoke
from gateway.models import Call
from tests.browser.test_dashboard_flow import PASSWORD, htmx_done, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
PAGES = ["/", "/servers/nas/", "/servers/nas/edit/", "/servers/new/", "/servers/nas/tools/",
         "/servers/nas/tools/share_create/", "/servers/nas/policy/", "/servers/nas/policy/?grant=agent-a",
         "/servers/nas/policy/versions/", "/servers/nas/policy/tools/share_create/", "/servers/nas/policy/globs/new/",
         "/servers/nas/policy/preview/", "/grants/", "/grants/new/", "/grants/agent-a/", "/calls/", "/calls/{call}/",
         "/approvals/"]


@pytest.fixture
def axe_page(browser):
    """A page that may run axe-core: the dashboard's CSP allows no injected script, so this context bypasses it."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `make install-test` (npm ci installs axe-core)")
    context = browser.new_context(bypass_csp=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def scan(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async () => {
      const r = await axe.run(document, {resultTypes: ['violations']});
      return r.violations.filter(v => ['critical', 'serious'].includes(v.impact))
        .map(v => v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | '));
    }""")
    return result


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_axe_finds_no_critical_or_serious_violation(live_server, hold, nas, axe_page, django_user_model, width,
                                                    height):
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True)
    hold()
    revoke(create_grant("gone", [nas["server"]], None).grant, timezone.now())
    create_grant("old", [nas["server"]], timezone.now() - timedelta(days=1))
    policies.apply(nas["server"], dict(policies.applicable(nas["server"], nas["grant"]).document,
                                       default="allow"), grant=nas["grant"], actor="test")
    call = Call.objects.first()
    page = axe_page
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{live_server.url}/login/")
    found = {"/login/": scan(page)}
    sign_in(page, live_server.url)
    for path in PAGES:
        page.goto(live_server.url + path.format(call=call.pk))
        found[path] = scan(page)
    bad = {path: v for path, v in found.items() if v}
    assert not bad, json.dumps(bad, indent=1)


def test_a_skip_link_leads_to_the_content(live_server, nas, page, django_user_model):
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/servers/nas/policy/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_focus_stays_on_the_control_after_a_swap_and_arrows_do_not_commit(live_server, nas, page, shoot,
                                                                          django_user_model):
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/servers/nas/policy/")
    select = page.get_by_label("rule for share_create", exact=True)
    select.focus()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/policy/action/" in r.url else None)
    page.keyboard.press("ArrowUp")  # approve → hide
    page.keyboard.press("ArrowUp")  # → deny
    page.wait_for_timeout(300)  # (a bounded look for requests that must not happen)
    assert requests == []
    htmx_done(page, lambda: page.keyboard.press("Enter"), "/policy/action/")
    assert len(requests) == 1
    page.wait_for_function("() => document.activeElement.getAttribute('aria-label') === 'rule for share_create'")
    assert "deny" in page.locator("tr:has(a:text-is('share_create'))").inner_text()
    # A pick with the mouse commits at once, and focus stays too.
    htmx_done(page, lambda: page.get_by_label("rule for share_create", exact=True).select_option("allow"),
              "/policy/action/")
    page.wait_for_function("() => document.activeElement.getAttribute('aria-label') === 'rule for share_create'")
    # Leaving a select changed with the arrows commits it.
    page.get_by_label("rule for share_create", exact=True).focus()
    page.keyboard.press("ArrowUp")
    htmx_done(page, lambda: page.keyboard.press("Tab"), "/policy/action/")
    assert len(requests) == 3
