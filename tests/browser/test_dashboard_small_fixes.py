"""Issue 13, item 13 in chromium: reloading the page that shows a new grant's token submits nothing and shows no
token; a missing page is the product's 404 with a way back."""

from __future__ import annotations

import pytest

from gateway.models import Grant
from tests.browser.test_dashboard_flow import PASSWORD, sign_in, staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_reloading_the_token_page_submits_nothing_and_the_token_is_gone(live_server, truenas, page, shoot,
                                                                        django_user_model, width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    page.goto(f"{base}/grants/new/")
    page.fill("input[name=name]", "reloaded")
    page.check(f"input[name=servers][value='{truenas.pk}']")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.get_by_role("button", name="Create and show the token").click()
    token = page.text_content("#grant-token").strip()
    assert token.startswith("pcl_") and page.url.endswith("/grants/reloaded/created/")
    page.reload()
    assert len(posts) == 1  # the reload was a GET
    assert token not in page.content() and "was shown once" in page.content()
    assert Grant.objects.filter(name="reloaded").count() == 1
    shoot(page, f"13-13-token-page-reloaded-{width}")
    page.goto(f"{base}/servers/nowhere/")
    assert page.locator("h1").inner_text() == "Nothing here" and page.locator("header.top nav").count() == 1
    shoot(page, f"13-13-not-found-{width}")


def test_the_register_forms_own_example_registers_and_lists_its_tools(live_server, transactional_db, page, shoot,
                                                                      django_user_model, monkeypatch):
    """Issue 13, item 9: `mcp-server-time --local-timezone UTC` is installed in the gateway's own environment but
    that environment's bin directory is not on PATH (as under `make run`); a misspelt program is refused at once."""
    import os
    import sys

    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p != os.path.dirname(sys.executable))
    monkeypatch.setenv("PATH", path)
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True, is_superuser=True)
    base = live_server.url
    sign_in(page, base)
    page.goto(f"{base}/servers/new/")
    page.fill("input[name=slug]", "time")
    page.check("input[name=transport][value=stdio]")
    page.fill("input[name=command]", "mcp-server-tiem --local-timezone UTC")
    page.get_by_role("button", name="Register", exact=True).click()
    assert "'mcp-server-tiem' was not found on the gateway's host" in page.content()
    shoot(page, "13-9-register-missing-program")
    page.fill("input[name=command]", "mcp-server-time --local-timezone UTC")
    page.get_by_role("button", name="Register", exact=True).click()
    page.wait_for_url(f"{base}/servers/time/")
    page.wait_for_selector("text=registered time and listed its 2 tools")  # listed at registration
    assert "FileNotFoundError" not in page.content()
    shoot(page, "13-9-registered-example-refreshed")
