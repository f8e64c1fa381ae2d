"""Reading the audit log: filters and keyset pagination, newest first, fast over many rows; and its export
(CSV or JSON Lines, for the dashboard's download and export_audit).

Keyset, not OFFSET: a page is "the N rows older than (created_at, id) of the last row shown", which uses the
(column, -created_at) indexes and costs the same on page 1 and page 1000; rows written meanwhile do not shift
the pages.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from gateway.models import Call

PAGE_SIZE = 50  # rows per page: one screen or two


# What happened to a call, as a person asks it: one query per kind here, and Call.what_happened says the same of one
# row (tests/dashboard/test_dashboard_call_investigation.py checks that the two agree on every combination).
_HELD = Q(refusal="approval", reason__startswith="approval pending")
KINDS: dict[str, tuple[str, Q]] = {
    "ok": (Call.WHAT_HAPPENED["ok"], Q(outcome=Call.Outcome.OK)),
    "failed": (Call.WHAT_HAPPENED["failed"], Q(outcome__in=Call.FAILED_OUTCOMES)),
    "policy": (Call.WHAT_HAPPENED["policy"], Q(outcome=Call.Outcome.REFUSED)
               & ~Q(refusal__in=("arguments", "limit", "approval"))),
    "arguments": (Call.WHAT_HAPPENED["arguments"], Q(outcome=Call.Outcome.REFUSED, refusal="arguments")),
    "limit": (Call.WHAT_HAPPENED["limit"], Q(outcome=Call.Outcome.REFUSED, refusal="limit")),
    "pending-approval": (Call.WHAT_HAPPENED["pending-approval"],
                         Q(outcome=Call.Outcome.PENDING, decision=Call.Decision.APPROVE)
                         | Q(outcome=Call.Outcome.REFUSED) & _HELD),
    "operator": (Call.WHAT_HAPPENED["operator"], Q(outcome=Call.Outcome.REFUSED, refusal="approval") & ~_HELD),
    "in-flight": (Call.WHAT_HAPPENED["in-flight"],
                  Q(outcome=Call.Outcome.PENDING) & ~Q(decision=Call.Decision.APPROVE)),
}


@dataclass(frozen=True)
class CallFilter:
    server: str = ""  # slug
    grant: str = ""  # name
    tool: str = ""  # exact tool name
    decision: str = ""
    outcome: str = ""
    search: str = ""  # substring of the tool name, grant name or reason
    kind: str = ""  # a key of KINDS
    since: datetime | None = None
    until: datetime | None = None


def filtered(f: CallFilter) -> QuerySet[Call]:
    qs = Call.objects.all()
    if f.kind in KINDS:
        qs = qs.filter(KINDS[f.kind][1])
    if f.since is not None:
        qs = qs.filter(created_at__gte=f.since)
    if f.until is not None:
        qs = qs.filter(created_at__lt=f.until)
    if f.server:
        qs = qs.filter(server_slug=f.server)
    if f.grant:
        qs = qs.filter(grant_name=f.grant)
    if f.tool:
        qs = qs.filter(tool_name=f.tool)
    if f.decision:
        qs = qs.filter(decision=f.decision)
    if f.outcome:
        qs = qs.filter(outcome=f.outcome)
    if f.search:
        qs = qs.filter(Q(tool_name__icontains=f.search) | Q(grant_name__icontains=f.search)
                       | Q(reason__icontains=f.search))
    return qs


def cursor_of(call: Call) -> str:
    return f"{call.created_at.isoformat()}_{call.pk}"


def parse_cursor(text: str) -> tuple[datetime, int] | None:
    when, _, pk = (text or "").rpartition("_")
    moment = parse_datetime(when) if when else None
    if moment is None or not pk.isdigit():
        return None
    return moment, int(pk)


@dataclass(frozen=True)
class Page:
    rows: list[Call]
    next_cursor: str  # "" on the last page


def page(f: CallFilter, before: str = "", size: int = PAGE_SIZE) -> Page:
    qs = filtered(f).select_related(None).order_by("-created_at", "-id")
    cursor = parse_cursor(before)
    if cursor is not None:
        moment, pk = cursor
        qs = qs.filter(Q(created_at__lt=moment) | Q(created_at=moment, id__lt=pk))
    rows = list(qs.defer("arguments", "counters", "error")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return Page(rows, cursor_of(rows[-1]) if more and rows else "")


@dataclass(frozen=True)
class Repeat:
    """Consecutive calls of one grant, tool, arguments and what happened, shown as one row (newest first)."""

    call: Call
    count: int
    oldest: datetime


def grouped(rows: list[Call]) -> list[Repeat]:
    out: list[Repeat] = []
    for call in rows:
        last = out[-1] if out else None
        if last is not None and _same(last.call, call):
            out[-1] = Repeat(last.call, last.count + 1, call.created_at)
        else:
            out.append(Repeat(call, 1, call.created_at))
    return out


def _same(a: Call, b: Call) -> bool:
    return (a.server_slug, a.grant_name, a.tool_name, a.argument_hash, a.decision, a.outcome, a.refusal) == (
        b.server_slug, b.grant_name, b.tool_name, b.argument_hash, b.decision, b.outcome, b.refusal)


EXPORT_FIELDS = ("id", "created_at", "server_slug", "grant_name", "tool_name", "via", "decision", "refusal", "outcome",
                 "what_happened", "reason", "rule", "policy_version", "latency_ms", "error", "argument_hash",
                 "arguments", "chain", "seq", "digest", "outcome_digest")


def export_row(call: Call) -> dict:
    return {"id": call.pk, "created_at": call.created_at.isoformat(), "server_slug": call.server_slug,
            "grant_name": call.grant_name, "tool_name": call.tool_name, "via": call.via, "decision": call.decision,
            "refusal": call.refusal, "outcome": call.outcome, "what_happened": call.what_happened,
            "reason": call.reason, "rule": call.rule,
            "policy_version": call.policy_version.number if call.policy_version_id else None,
            "latency_ms": call.latency_ms, "error": call.error, "argument_hash": call.argument_hash,
            "arguments": call.arguments,  # stored redacted: nothing here was not already in the audit log
            "chain": call.chain, "seq": call.seq, "digest": call.digest, "outcome_digest": call.outcome_digest}


def export_lines(flt: CallFilter, kind: str, oldest_first: bool = False) -> Iterator[str]:
    """The calls a filter matches as CSV (formula-looking cells quoted so a spreadsheet does not run them) or JSON
    Lines: newest first (the dashboard's download), or oldest first (export_audit)."""
    order = ("created_at", "id") if oldest_first else ("-created_at", "-id")
    rows = filtered(flt).select_related("policy_version").order_by(*order).iterator(chunk_size=2000)
    if kind == "jsonl":
        for call in rows:
            yield json.dumps(export_row(call), ensure_ascii=False, default=str) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    for call in rows:
        row = export_row(call)
        row["arguments"] = json.dumps(row["arguments"], ensure_ascii=False)
        writer.writerow([_cell(row[f]) for f in EXPORT_FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
