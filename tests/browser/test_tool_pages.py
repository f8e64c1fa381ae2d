"""The catalogue and a tool's page as operators read them (issue 13, item 11): the Description column shows the
tool's description; a tool's page says what the policies in force do with it and which rule decides, lists its
parameters as a table and its latest calls, and can return to the classifier's decision. Both widths."""

from __future__ import annotations

import pytest

from gateway.models import Call, Tool
from tests.browser.test_dashboard_flow import staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCHEMA = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "description": "the share's name", "maxLength": 80},
    "purpose": {"type": "string", "enum": ["DEFAULT", "TIMEMACHINE"], "default": "DEFAULT"}}}


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_a_tools_page_answers_what_an_operator_asks(live_server, nas, page, shoot, django_user_model, width,
                                                    height):
    Tool.objects.filter(name="share_create").update(input_schema=SCHEMA)
    Call.objects.create(server=nas["server"], server_slug="nas", grant=nas["grant"], grant_name="agent-a",
                        tool_name="share_create", decision="approve", outcome="ok")
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    page.goto(f"{base}/servers/nas/tools/")
    assert "Create an SMB share" in page.locator("table.tools tbody tr").first.inner_text()
    page.get_by_role("link", name="share_create").click()
    force = page.locator(".in-force")
    assert "every grant (the server's policy v1)" in force.inner_text() and "approve" in force.inner_text()
    assert force.get_by_role("link", name="/tools/share_create").count() == 1
    params = page.locator("table.params")
    assert "name\tstring\trequired\tthe share's name\tlength ≤ 80" in params.inner_text()
    assert 'one of "DEFAULT", "TIMEMACHINE"; default "DEFAULT"' in params.inner_text()
    assert "agent-a" in page.locator("[aria-label='recent calls']").inner_text()
    shoot(page, f"13-11-tool-page-{width}", full_page=True)

    page.select_option("select[name=category]", "destructive")
    page.select_option("select[name=level]", "critical")
    page.fill("textarea[name=reason]", "it deletes data on the other side")
    page.get_by_role("button", name="Override classification").click()
    page.wait_for_selector("text=share_create is now destructive · critical")
    page.get_by_role("button", name="Return to the classifier's decision").click()
    page.wait_for_selector("text=classified by the classifier again")
    tool = Tool.objects.get(name="share_create")
    assert not tool.risk_overridden
    assert not page.console_errors, page.console_errors
