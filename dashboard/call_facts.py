"""The call log as an investigation tool: the filter from the form (a time range included), an export of exactly
that filter, and a call's counters in words ("writes: 3 of 20 this minute, per grant")."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.calls import ratelimit
from gateway.calls.call_log import CallFilter, filtered
from gateway.models import Call
from gateway.policy.document import WINDOW_NAMES

PERIODS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
EXPORT_FIELDS = ("id", "created_at", "server_slug", "grant_name", "tool_name", "decision", "refusal", "outcome",
                 "what_happened", "reason", "rule", "policy_version", "latency_ms", "error", "argument_hash",
                 "arguments")


def call_filter(data: dict, now: datetime) -> CallFilter:
    since, until = data.get("since"), data.get("until")
    if data.get("period") in PERIODS:  # a period wins over a from/until range
        since, until = now - PERIODS[data["period"]], None
    return CallFilter(server=data.get("server", ""), grant=data.get("grant", ""), tool=data.get("tool", ""),
                      decision=data.get("decision", ""), outcome=data.get("outcome", ""), search=data.get("q", ""),
                      kind=data.get("kind", ""), since=since, until=until)


def _row(call: Call) -> dict:
    return {"id": call.pk, "created_at": call.created_at.isoformat(), "server_slug": call.server_slug,
            "grant_name": call.grant_name, "tool_name": call.tool_name, "decision": call.decision,
            "refusal": call.refusal, "outcome": call.outcome, "what_happened": call.what_happened,
            "reason": call.reason, "rule": call.rule,
            "policy_version": call.policy_version.number if call.policy_version_id else None,
            "latency_ms": call.latency_ms, "error": call.error, "argument_hash": call.argument_hash,
            "arguments": call.arguments}  # stored redacted: nothing here was not already in the audit log


def export_lines(flt: CallFilter, kind: str) -> Iterator[str]:
    """CSV (formula-looking cells quoted so a spreadsheet does not run them) or JSON Lines, newest first."""
    rows = filtered(flt).select_related("policy_version").order_by("-created_at", "-id").iterator(chunk_size=2000)
    if kind == "jsonl":
        for call in rows:
            yield json.dumps(_row(call), ensure_ascii=False, default=str) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    for call in rows:
        row = _row(call)
        row["arguments"] = json.dumps(row["arguments"], ensure_ascii=False)
        writer.writerow([_cell(row[f]) for f in EXPORT_FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@dataclass(frozen=True)
class CounterWords:
    key: str
    text: str


def counters_in_words(call: Call, now: datetime) -> list[CounterWords]:
    """Each counter the call took, in words: which, per what, which window, how full it is (while it lasts)."""
    keys = [k for k in (call.counters or []) if isinstance(k, str)]
    counts = ratelimit.current(keys)
    limits = _limits(call.policy_version.document if call.policy_version_id else {})
    out = []
    for key in keys:
        parts = key.split("|")
        if len(parts) != 5 or not parts[3].isdigit() or not parts[4].isdigit():
            out.append(CounterWords(key, key))
            continue
        name, scope, who, window, start = parts[0], parts[1], parts[2], int(parts[3]), int(parts[4])
        begins = datetime.fromtimestamp(start, UTC)
        ends = begins + timedelta(seconds=window)
        span = WINDOW_NAMES.get(window, f"{window} s")
        maximum = limits.get(name)
        of = f" of {maximum}" if maximum else ""
        per = {"grant": f"per grant ({who.split('/', 1)[-1]})", "server": "per server, all grants together",
               "global": "for the whole gateway",
               "session": f"per agent session ({who.split('/', 2)[-1]})"}.get(scope, f"per {scope}")
        if ends > now:
            text = f"{name}: {counts.get(key, 0)}{of} this {span}, {per} (window {begins:%H:%M:%S}–{ends:%H:%M:%S} UTC)"
        else:
            text = f"{name}: counted{of and ' toward ' + str(maximum)} in the {span} {begins:%Y-%m-%d %H:%M:%S}–" \
                   f"{ends:%H:%M:%S} UTC, {per} (that window has ended)"
        out.append(CounterWords(key, text))
    return out


def _limits(document: dict) -> dict[str, int]:
    found: dict[str, int] = {}

    def take(rule):
        for limit in (rule or {}).get("limits", []) if isinstance(rule, dict) else []:
            if isinstance(limit, dict) and "counter" in limit:
                found.setdefault(limit["counter"], limit.get("max"))

    take(document.get("all_tools"))
    for section in ("tools", "risk"):
        for rule in (document.get(section) or {}).values():
            take(rule)
    return found
