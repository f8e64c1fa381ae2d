"""An approval whose agent stopped waiting (issue 13, item 7): its card says so and what approving now does, with no
countdown; the navigation badge does not count it; the call log reads "pending approval", not "refused"."""

from __future__ import annotations

import pytest

from gateway.models import Call
from gateway.protocol.holding import pending_text
from tests.browser.test_dashboard_flow import PASSWORD, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_an_approval_the_agent_stopped_waiting_for_says_so(live_server, transactional_db, hold, page, shoot,
                                                           django_user_model, width, height):
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True)
    waiting = hold({"name": "media"})
    stopped = hold({"name": "backups"})
    # What the gateway writes when the hold window ends: the row refused with the text the agent reads.
    Call.objects.filter(approval=stopped).update(outcome="refused", refusal="approval", reason=pending_text(stopped))
    page.set_viewport_size({"width": width, "height": height})
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/approvals/")
    gone = page.locator(f"#approval-{stopped.public_id}")
    assert "agent stopped waiting" in gone.inner_text()
    assert "Approving now lets its next call with exactly these arguments run once" in gone.inner_text()
    assert gone.locator(".time-left").count() == 0
    held = page.locator(f"#approval-{waiting.public_id}")
    assert held.locator(".time-left").count() == 1 and "agent stopped waiting" not in held.inner_text()
    assert page.locator("#pending-count").inner_text().strip() == "1"
    shoot(page, f"13-7-approval-stopped-waiting-{width}", full_page=True)
    page.goto(f"{live_server.url}/calls/")
    row = page.locator(f"#call-{Call.objects.get(approval=stopped).pk}")
    assert "pending approval" in row.inner_text() and "refused" not in row.inner_text().lower()
    shoot(page, f"13-7-call-log-pending-approval-{width}")
