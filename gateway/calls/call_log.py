"""Reading the audit log: filters and keyset pagination, newest first, fast over many rows.

Keyset, not OFFSET: a page is "the N rows older than (created_at, id) of the last row shown", which uses the
(column, -created_at) indexes and costs the same on page 1 and page 1000; rows written meanwhile do not shift
the pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from gateway.models import Call

PAGE_SIZE = 50  # rows per page: one screen or two


@dataclass(frozen=True)
class CallFilter:
    server: str = ""  # slug
    grant: str = ""  # name
    tool: str = ""  # exact tool name
    decision: str = ""
    outcome: str = ""
    search: str = ""  # substring of the tool name, grant name or reason


def filtered(f: CallFilter) -> QuerySet[Call]:
    qs = Call.objects.all()
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
