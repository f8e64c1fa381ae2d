"""The call log: newest first, filters, search, keyset pages, a call's detail with the rule linked to the builder."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gateway.calls.call_log import CallFilter, page
from gateway.models import Call
from tests.dashboard.fixtures import htmx


@pytest.fixture
def calls(truenas):
    now = timezone.now()
    rows = []
    for i in range(120):
        deny = i % 3 == 0
        rows.append(Call(created_at=now - timedelta(seconds=i // 2), server=truenas, server_slug="truenas",
                         grant_name="agent-a" if i % 2 else "agent-b",
                         tool_name="dataset_delete" if deny else "pool_list",
                         decision="deny" if deny else "allow", outcome="refused" if deny else "ok",
                         reason="destructive tools are denied" if deny else "", latency_ms=3.0,
                         rule="/risk/destructive" if deny else "/risk/read",
                         arguments={"id": i, "token": "[redacted]"}))
    return Call.objects.bulk_create(rows)


def test_it_pages_newest_first_without_gaps_or_repeats_even_on_equal_timestamps(calls):
    seen, cursor = [], ""
    while True:
        result = page(CallFilter(), cursor, size=25)
        seen += [c.pk for c in result.rows]
        if not result.next_cursor:
            break
        cursor = result.next_cursor
    expected = list(Call.objects.order_by("-created_at", "-id").values_list("pk", flat=True))
    assert seen == expected and len(seen) == 120


def test_it_filters_by_decision_grant_tool_and_searches(calls):
    assert len(page(CallFilter(decision="deny"), size=200).rows) == 40
    assert len(page(CallFilter(grant="agent-a", tool="pool_list"), size=200).rows) == 40
    assert len(page(CallFilter(search="destructive"), size=200).rows) == 40
    assert page(CallFilter(outcome="timeout")).rows == []


def test_it_renders_the_log_and_loads_older_rows_over_htmx(staff_client, calls):
    body = staff_client.get("/calls/").content.decode()
    assert body.count('class="call ') == 50 and "Older calls" in body
    older = body.split('class="older"><td colspan="8"><a href="')[1].split('"')[0].replace("&amp;", "&")
    more = staff_client.get("/calls/" + older, **htmx()).content.decode()
    assert "<html" not in more and more.count('class="call ') == 50


def test_it_filters_the_page_by_decision(staff_client, calls):
    body = staff_client.get("/calls/", {"decision": "deny", "server": "truenas"}, **htmx()).content.decode()
    assert body.count('class="call ') == 40 and "pool_list" not in body


def test_it_shows_a_calls_detail_with_redacted_arguments_and_the_rule_linked(staff_client, calls):
    call = calls[0]
    body = staff_client.get(f"/calls/{call.pk}/").content.decode()
    assert "[redacted]" in body and "destructive tools are denied" in body
    assert 'href="/servers/truenas/policy/?category=destructive"' in body


def test_it_links_a_tool_rule_to_that_tools_editor(staff_client, truenas):
    call = Call.objects.create(server=truenas, server_slug="truenas", tool_name="cloud_backup_run",
                               decision="deny", refusal="limit", rule="/tools/cloud_backup_run/limits/0",
                               counters=["cloud_backup_run_rate|grant|truenas/a|60|0"], outcome="refused")
    body = staff_client.get(f"/calls/{call.pk}/").content.decode()
    assert 'href="/servers/truenas/policy/tools/cloud_backup_run/"' in body and "cloud_backup_run_rate|grant" in body


def test_the_log_says_how_it_is_kept_and_where_it_streams_without_credentials(staff_client, settings):
    from gateway.models import AuditStream

    page_text = staff_client.get("/calls/").content.decode()
    assert "Every row is kept." in page_text and "Streamed to" not in page_text
    settings.PORTCULLIS_AUDIT_RETENTION_DAYS = 90
    settings.PORTCULLIS_AUDIT_STREAM = "https://siem-user:siem-password@siem.example.org:8443/ingest"
    AuditStream.objects.create(id="default", last_id=41, delivered=41, last_sent_at=timezone.now(),
                               last_error="HTTP 503", last_error_at=timezone.now())
    page_text = staff_client.get("/calls/").content.decode()
    assert "Rows older than 90 days are archived" in page_text
    assert "Streamed to https://siem.example.org:8443" in page_text and "41 rows delivered" in page_text
    assert "HTTP 503 (rows wait and are sent again)" in page_text
    assert "siem-password" not in page_text and "siem-user" not in page_text
