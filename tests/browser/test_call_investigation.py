"""The call log as an investigation tool in the browser (issue 13, "Beyond fixing"): tell the kinds of refusal
apart and filter by one, narrow to the last hour, group repeats, export exactly what is shown, and read a failed
call's upstream error and its counters in words. Both widths."""

from __future__ import annotations

import csv
import io
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from gateway import policies
from gateway.models import Call, Counter
from tests.browser.test_dashboard_flow import htmx_done, staff_signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_investigating_a_loop_of_rate_limited_calls(live_server, nas, page, shoot, django_user_model, width,
                                                    height):
    if time.time() % 60 > 40:  # the counter's minute must still be the current one when the page is read
        time.sleep(61 - time.time() % 60)
    now, server = timezone.now(), nas["server"]
    base_row = {"server": server, "server_slug": "nas", "grant": nas["grant"], "grant_name": "agent-a"}
    start = int(now.timestamp()) // 60 * 60
    key = f"share_create_rate|grant|nas/agent-a|60|{start}"
    Counter.objects.create(key=key, n=5, window_end=start + 60)
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"share_create": {"limits": [
        {"counter": "share_create_rate", "window": "minute", "max": 5, "scope": "grant"}]}}}, actor="test")
    version = policies.active_version(server)
    Call.objects.bulk_create(
        [Call(**base_row, tool_name="share_create", decision="deny", outcome="refused", refusal="limit",
              argument_hash="a" * 64, reason="limit share_create_rate reached", created_at=now - timedelta(seconds=i))
         for i in range(6)]
        + [Call(**base_row, tool_name="share_create", decision="allow", outcome="tool_error", argument_hash="b" * 64,
                error="pool tank is read-only", counters=[key], policy_version=version,
                created_at=now - timedelta(seconds=30)),
           Call(**base_row, tool_name="share_list", decision="allow", outcome="ok",
                created_at=now - timedelta(days=2))])
    base = staff_signed_in(page, live_server, django_user_model, width, height)
    page.goto(f"{base}/calls/")
    assert "rate-limited" in page.inner_text("#call-rows") and "ran: failed" in page.inner_text("#call-rows")
    htmx_done(page, lambda: page.select_option("select[name=period]", "hour"), "/calls/", "GET")
    assert "share_list" not in page.inner_text("#call-rows")
    htmx_done(page, lambda: page.select_option("select[name=kind]", "limit"), "/calls/", "GET")
    assert "6 calls match" in page.inner_text("#call-summary")
    htmx_done(page, lambda: page.check("input[name=group]"), "/calls/", "GET")
    rows = page.locator("#call-rows tr.call")
    assert rows.count() == 1 and "×6" in rows.first.inner_text()
    shoot(page, f"13-calls-investigation-{width}", full_page=True)
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    exported = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert len(exported) == 6 and {r["what_happened"] for r in exported} == {"limit"}

    failed = Call.objects.get(outcome="tool_error")
    page.goto(f"{base}/calls/{failed.pk}/")
    facts = page.inner_text("dl.facts")
    assert "pool tank is read-only" in facts
    assert "share_create_rate: 5 of 5 this minute, per grant (agent-a)" in facts
    shoot(page, f"13-call-detail-counters-{width}", full_page=True)
    assert not page.console_errors, page.console_errors
