"""The builder's table (issue 13, item 8): the per-tool control is never under the sticky JSON panel or off screen,
and the columns line up from one risk tier to the next, at desktop, narrow desktop and phone widths."""

from __future__ import annotations

import sys

import pytest

from gateway import policies
from gateway.models import Server, Tool
from tests.browser.test_dashboard_flow import staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOOLS = [("pool_list", "read", "low"),
         ("replication_restore_everything_from_the_remote_side_now", "destructive", "critical"),
         ("x", "write", "medium"), ("cloud_backup_run", "execute", "high")]


@pytest.fixture
def tiers(transactional_db):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport="stdio",
                                   command=[sys.executable, "-m", "truenas_sim"])
    for position, (name, category, level) in enumerate(TOOLS):
        Tool.objects.create(server=server, name=name, description=name, input_schema={"type": "object"},
                            definition={"name": name}, definition_hash=f"{position:064d}",
                            approved_hash=f"{position:064d}", risk_category=category, risk_level=level,
                            position=position)
    policies.apply(server, {"version": "1", "default": "deny", "risk": {"read": {}}, "tools": {
        "cloud_backup_run": {"limits": [{"counter": "c", "window": "minute", "max": 10, "scope": "grant"}]}}},
                   actor="test")
    return server


@pytest.mark.parametrize("width,height", [(1440, 900), (1180, 800), (390, 844)], ids=["desktop", "narrow", "phone"])
def test_every_rows_control_is_visible_and_columns_line_up(live_server, tiers, page, shoot, django_user_model,
                                                           width, height):
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    page.goto(f"{base}/servers/truenas/policy/")
    aside = page.locator("#preview").bounding_box()
    for name, _, _ in TOOLS:
        select = page.get_by_label(f"rule for {name}", exact=True)
        select.scroll_into_view_if_needed()
        box = select.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (name, box)
        if aside["x"] > box["x"]:  # the panel is beside the table: the control ends before it starts
            assert box["x"] + box["width"] <= aside["x"], (name, box, aside)
        hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y).getAttribute('aria-label')",
                            [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
        assert hit == f"rule for {name}", (name, hit)  # on top: nothing covers it
    columns = page.evaluate("""() => [...document.querySelectorAll('table.rules')].map(t =>
        [...t.querySelectorAll('thead th')].filter(th => th.offsetWidth)
          .map(th => Math.round(th.getBoundingClientRect().left)))""")
    assert len(columns) == 4 and all(c == columns[0] for c in columns), columns
    shoot(page, f"13-8-builder-columns-{width}", full_page=True)
