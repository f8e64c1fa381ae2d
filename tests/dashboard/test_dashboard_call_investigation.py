"""The call log as an investigation tool (issue 13, "Beyond fixing"): what happened, told apart (rate-limited,
arguments refused, denied by policy, pending approval, denied by an operator, failed); a time range; repeats
grouped; the count; CSV and JSON Lines export of exactly the filter; the upstream's error text and the counters in
words on a call's page."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from itertools import product

from django.utils import timezone

from gateway import policies
from gateway.calls.call_log import KINDS
from gateway.models import Call, Counter


def make(server, **fields):
    base = {"server": server, "server_slug": server.slug, "grant_name": "agent", "tool_name": "pool_list",
            "decision": "allow", "outcome": "ok"}
    return Call.objects.create(**{**base, **fields})


def test_what_happened_agrees_between_the_row_and_the_query_for_every_combination(truenas):
    combos = list(product([o for o, _ in Call.Outcome.choices], ["allow", "deny", "approve"],
                          ["", "policy", "hidden", "arguments", "limit", "error", "approval"],
                          ["", "approval pending (id ab)…"]))
    Call.objects.bulk_create([Call(server=truenas, server_slug="truenas", tool_name=f"t{i}", outcome=o, decision=d,
                                   refusal=r, reason=why) for i, (o, d, r, why) in enumerate(combos)])
    by_kind = {kind: set(Call.objects.filter(q).values_list("pk", flat=True)) for kind, (_, q) in KINDS.items()}
    for call in Call.objects.all():
        assert [k for k, pks in by_kind.items() if call.pk in pks] == [call.what_happened], (
            call.outcome, call.decision, call.refusal, call.reason)


def test_each_kind_of_refusal_is_told_apart_and_filtered(staff_client, truenas):
    make(truenas, decision="deny", outcome="refused", refusal="limit", reason="limit reached", tool_name="a_tool")
    make(truenas, decision="deny", outcome="refused", refusal="arguments", reason="args.path", tool_name="b_tool")
    make(truenas, decision="deny", outcome="refused", refusal="policy", reason="denied", tool_name="c_tool")
    body = staff_client.get("/calls/").content.decode()
    assert "rate-limited" in body and "arguments refused" in body and "denied by policy" in body
    limited = staff_client.get("/calls/", {"kind": "limit"}).content.decode()
    assert "a_tool" in limited and "b_tool" not in limited and "<strong>1</strong> call matches" in limited


def test_a_time_range_and_a_period_narrow_the_log(staff_client, truenas):
    now = timezone.now()
    make(truenas, tool_name="recent_tool", created_at=now - timedelta(minutes=5))
    make(truenas, tool_name="old_tool", created_at=now - timedelta(days=3))
    hour = staff_client.get("/calls/", {"period": "hour"}).content.decode()
    assert "recent_tool" in hour and "old_tool" not in hour
    since = (now - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M")
    until = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    ranged = staff_client.get("/calls/", {"since": since, "until": until}).content.decode()
    assert "old_tool" in ranged and "recent_tool" not in ranged
    wrong = staff_client.get("/calls/", {"since": until, "until": since}).content.decode()
    assert "the end of the range must come after its start" in wrong


def test_repeats_are_grouped_when_asked(staff_client, truenas):
    for _ in range(4):
        make(truenas, tool_name="loop_tool", argument_hash="x" * 64, decision="deny", outcome="refused",
             refusal="limit")
    make(truenas, tool_name="other_tool")
    body = staff_client.get("/calls/", {"group": "on"}).content.decode()
    assert body.count(">loop_tool") == 1 and "×4" in body


def test_export_gives_exactly_the_filter_as_csv_and_json_lines(staff_client, truenas):
    make(truenas, tool_name="=cmd|calc", decision="deny", outcome="refused", refusal="policy", reason="no")
    make(truenas, tool_name="pool_list", arguments={"name": "tank"})
    response = staff_client.get("/calls/export/", {"decision": "deny", "format": "csv"})
    assert response["Content-Disposition"].startswith('attachment; filename="portcullis-calls-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["tool_name"] for r in rows] == ["'=cmd|calc"]  # a spreadsheet shows it, never runs it
    assert rows[0]["what_happened"] == "policy"
    lines = b"".join(staff_client.get("/calls/export/", {"format": "jsonl"}).streaming_content).decode().splitlines()
    assert [json.loads(line)["tool_name"] for line in lines] == ["pool_list", "=cmd|calc"]
    assert json.loads(lines[0])["arguments"] == {"name": "tank"}


def test_a_calls_page_gives_the_upstreams_error_and_its_counters_in_words(staff_client, truenas):
    version = policies.active_version(truenas)
    start = int(timezone.now().timestamp()) // 60 * 60
    key = f"cloud_backup_run_rate|grant|truenas/agent|60|{start}"
    Counter.objects.create(key=key, n=3, window_end=start + 60)
    call = make(truenas, tool_name="cloud_backup_run", outcome="tool_error", error="disk quota exceeded",
                counters=[key], policy_version=version)
    body = staff_client.get(f"/calls/{call.pk}/").content.decode()
    assert "Upstream said" in body and "disk quota exceeded" in body and "ran: failed" in body
    maximum = version.document["tools"]["cloud_backup_run"]["limits"][0]["max"]
    assert f"cloud_backup_run_rate: 3 of {maximum} this minute, per grant (agent)" in body
