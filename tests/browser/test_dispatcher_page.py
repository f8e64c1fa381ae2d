"""An operator governs the real TrueNAS server's one tool by action (issue 14), in chromium at desktop and phone
widths: the tool's page suggests the dispatcher shape, the operator confirms it with the TrueNAS action list, the
builder shows the actions with the seed's rules, and an action an agent called that the catalogue did not know
waits on the dispatcher's page until the operator accepts it."""

from __future__ import annotations

import sys

import pytest
from django.utils import timezone

from gateway import calls, policies
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import Server, Tool
from tests.browser.test_dashboard_flow import staff_signed_in
from tests.policy.policy_cases import SEED

pytestmark = [pytest.mark.browser, pytest.mark.slow]

UMBRELLA = {"name": "truenas", "description": "Run any TrueNAS action.",
            "inputSchema": {"type": "object", "properties": {"category": {"type": "string"},
                                                             "action": {"type": "string"},
                                                             "params": {"type": "object"}}}}


@pytest.fixture
def umbrella(transactional_db):
    server = Server.objects.create(slug="truenas", name="TrueNAS (one tool)", transport="stdio",
                                   command=[sys.executable, "-m", "truenas_sim", "--umbrella"])
    sync_tools(server, [UMBRELLA], timezone.now())
    policies.apply(server, SEED, actor="test")
    return server


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_an_operator_governs_the_one_tool_by_action(live_server, umbrella, page, shoot, django_user_model,
                                                    width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    page.goto(f"{base}/servers/truenas/tools/truenas/")
    page.get_by_role("heading", name="This tool looks like a dispatcher").wait_for()
    assert page.get_by_label("The argument that names the action").input_value() == "/action"
    assert page.get_by_label("Arguments that must agree with the action").input_value() == "/category"
    assert page.get_by_label("Add actions").input_value() == "truenas"
    shoot(page, f"14-1-dispatcher-suggested-{width}", full_page=True)
    page.get_by_role("button", name="Govern it by action").click()
    page.get_by_text("governed by action: 278 actions in the catalogue").wait_for()
    shoot(page, f"14-2-dispatcher-declared-{width}", full_page=True)

    page.goto(f"{base}/servers/truenas/policy/")
    row = page.locator("tr", has=page.get_by_role("link", name="cloud_backup_run", exact=True))
    row.get_by_text("via truenas").wait_for()
    assert "10 per minute per grant" in row.inner_text()
    row.scroll_into_view_if_needed()
    shoot(page, f"14-3-builder-actions-{width}")

    token = create_grant("agent", [umbrella], None).token
    refused = calls.admit(token, umbrella, "truenas", {"category": "system", "action": "system_wipe_all"},
                          timezone.now())
    assert not refused.forward
    page.goto(f"{base}/servers/truenas/tools/truenas/")
    page.get_by_role("heading", name="Actions waiting for your review (1)").wait_for()
    shoot(page, f"14-4-action-waiting-{width}", full_page=True)
    page.locator("tr", has=page.get_by_text("system_wipe_all")).get_by_role("button", name="Accept").click()
    page.get_by_text("accepted system_wipe_all").wait_for()
    assert Tool.objects.get(server=umbrella, name="system_wipe_all").held_reason == ""
    # Accepted, the policy decides it: the seed's default denies it, with the reason.
    again = calls.admit(token, umbrella, "truenas", {"category": "system", "action": "system_wipe_all"},
                        timezone.now())
    assert again.message.endswith("is not allowed by this policy (default: deny)")
