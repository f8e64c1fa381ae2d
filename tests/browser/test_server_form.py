"""Registering a server as operators do (issue 13, item 9): the form shows only the chosen transport's fields,
"Test connection" lists the tools without saving, and registering the form's own example
(mcp-server-time --local-timezone UTC) lists its tools at once. Both widths."""

from __future__ import annotations

import pytest

from gateway.models import Server, Tool
from tests.browser.test_dashboard_flow import PASSWORD, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_registering_the_forms_own_example(live_server, transactional_db, page, shoot, django_user_model, width,
                                           height):
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True, is_superuser=True)
    page.set_viewport_size({"width": width, "height": height})
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/servers/new/")
    stdio, http = page.locator("fieldset[data-transport=stdio]"), page.locator("fieldset[data-transport='http sse']")
    page.check("input[name=transport][value=stdio]")
    assert stdio.is_visible() and not http.is_visible()
    page.check("input[name=transport][value=http]")
    assert http.is_visible() and not stdio.is_visible()
    page.check("input[name=transport][value=stdio]")

    page.fill("input[name=slug]", "time")
    example = "mcp-server-time --local-timezone UTC"
    assert f"e.g. {example}" in stdio.inner_text()  # the form's own example, as its help text gives it
    page.fill("input[name=command]", example)
    page.get_by_role("button", name="Test connection").click()
    page.wait_for_selector("text=connected: it lists 2 tools")
    assert not Server.objects.filter(slug="time").exists()
    shoot(page, f"13-9-test-connection-{width}", full_page=True)
    assert stdio.is_visible() and not http.is_visible()  # the answer page shows the chosen transport's fields

    page.get_by_role("button", name="Register").click()
    page.wait_for_selector("text=registered time and listed its 2 tools")
    assert Tool.objects.filter(server__slug="time").count() == 2
    shoot(page, f"13-9-registered-{width}")
    assert not page.console_errors, page.console_errors
