"""What is wide or cannot be undone asks first (issue 13, item 5): revoke (type the name), disable a server, save and
discard a draft, roll back, "always allow" — each says what will change, Cancel changes nothing, confirming acts.
At desktop and phone widths."""

from __future__ import annotations

import pytest

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Approval, Grant, PolicyVersion, Server
from tests.browser.test_dashboard_flow import htmx_done, staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WIDTHS = pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])


@WIDTHS
def test_revoke_and_disable_say_what_happens_and_ask(live_server, nas, page, shoot, django_user_model,
                                                     width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    create_grant("ux-agent", [nas["server"]], None)
    page.goto(f"{base}/grants/ux-agent/")
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_selector("text=Revoke grant ux-agent?")
    assert "This cannot be undone" in page.inner_text("main")
    confirm = page.get_by_role("button", name="Revoke ux-agent")
    confirm.click()  # nothing typed: the browser asks for the name, nothing is sent
    assert Grant.objects.get(name="ux-agent").revoked_at is None
    page.get_by_label("Type ux-agent to confirm").fill("ux-agen")
    page.get_by_role("button", name="Revoke ux-agent").click()
    page.wait_for_selector("text=type ux-agent exactly to confirm")
    assert Grant.objects.get(name="ux-agent").revoked_at is None
    page.console_errors.clear()  # the wrong name's 400, which the browser logs
    shoot(page, f"13-5-revoke-confirm-{width}")
    page.get_by_label("Type ux-agent to confirm").fill("ux-agent")
    page.get_by_role("button", name="Revoke ux-agent").click()
    page.wait_for_selector("text=its next call is refused")
    assert Grant.objects.get(name="ux-agent").revoked_at is not None

    page.goto(f"{base}/servers/nas/")
    page.get_by_role("button", name="Disable server").click()
    page.wait_for_selector("text=Disable nas?")
    assert "Every call to its tools is refused" in page.inner_text("main")
    shoot(page, f"13-5-disable-confirm-{width}")
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_url(f"{base}/servers/nas/")
    assert Server.objects.get(slug="nas").enabled
    page.get_by_role("button", name="Disable server").click()
    page.get_by_role("button", name="Disable nas").click()
    page.wait_for_selector("text=every call is refused")
    assert not Server.objects.get(slug="nas").enabled
    assert not page.console_errors, page.console_errors


@WIDTHS
def test_save_discard_and_roll_back_say_what_changes_and_ask(live_server, nas, page, shoot, django_user_model,
                                                             width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    first = policies.active_version(nas["server"])
    page.goto(f"{base}/servers/nas/policy/")
    htmx_done(page, lambda: page.get_by_label("rule for share_create", exact=True).select_option("deny"), "/policy/")
    page.get_by_role("button", name="Save as new version").click()
    page.wait_for_selector(f"text=Save 1 change as v{first.number + 1}?")
    assert "share_create" in page.inner_text("main")
    shoot(page, f"13-5-save-confirm-{width}")
    assert PolicyVersion.objects.filter(server=nas["server"]).count() == 1
    page.get_by_role("button", name=f"Save v{first.number + 1}").click()
    page.wait_for_selector(f"text=activated version v{first.number + 1}")

    htmx_done(page, lambda: page.get_by_label("rule for share_create", exact=True).select_option("allow"), "/policy/")
    page.get_by_role("button", name="Discard draft").click()
    page.wait_for_selector("text=Discard the draft's 1 change?")
    shoot(page, f"13-5-discard-confirm-{width}")
    page.get_by_role("button", name="Discard the draft").click()
    page.wait_for_selector("text=draft discarded")

    page.goto(f"{base}/servers/nas/policy/versions/")
    page.get_by_role("button", name=f"Roll back to v{first.number}").click()
    page.wait_for_selector(f"text=Roll back to v{first.number}?")
    assert f"Undo: roll back to v{first.number + 1}" in page.inner_text("main")
    shoot(page, f"13-5-rollback-confirm-{width}")
    page.get_by_role("button", name=f"Roll back to v{first.number}").click()
    page.wait_for_selector("text=rolled back")
    assert policies.active_version(nas["server"]).document == first.document
    assert not page.console_errors, page.console_errors


def ask_to_always_allow(page, base: str, approval):
    """On the approvals page, press "Approve & always allow for this grant…": the card then asks."""
    page.goto(f"{base}/approvals/")
    card = page.locator(f"#approval-{approval.public_id}")
    htmx_done(page, lambda: card.get_by_role("button", name="Approve & always allow for this grant…").click(),
              "/decide/")
    return page.locator(f"#approval-{approval.public_id}")


@WIDTHS
def test_always_allow_says_what_it_writes_and_asks(live_server, hold, nas, page, shoot, django_user_model,
                                                   width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    approval = hold()
    card = ask_to_always_allow(page, base, approval)
    assert "Always allow share_create for agent-a?" in card.inner_text()
    assert Approval.objects.get(pk=approval.pk).state == "pending"
    shoot(page, f"13-5-always-allow-confirm-{width}")
    htmx_done(page, lambda: card.get_by_role("button", name="Approve and always allow").click(), "/decide/")
    assert Approval.objects.get(pk=approval.pk).state == "approved"
    assert PolicyVersion.objects.filter(grant=nas["grant"], is_active=True).exists()
    assert not page.console_errors, page.console_errors
