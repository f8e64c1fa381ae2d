"""The call log as an investigation tool: the filter from the form (a time range included; its export is
gateway/calls/call_log.py's) and a call's counters in words ("writes: 3 of 20 this minute, per grant")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.calls import ratelimit
from gateway.calls.call_log import CallFilter
from gateway.models import Call
from gateway.policy.document import WINDOW_NAMES

PERIODS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
def call_filter(data: dict, now: datetime) -> CallFilter:
    since, until = data.get("since"), data.get("until")
    if data.get("period") in PERIODS:  # a period wins over a from/until range
        since, until = now - PERIODS[data["period"]], None
    return CallFilter(server=data.get("server", ""), grant=data.get("grant", ""), tool=data.get("tool", ""),
                      decision=data.get("decision", ""), outcome=data.get("outcome", ""), search=data.get("q", ""),
                      kind=data.get("kind", ""), since=since, until=until)


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
