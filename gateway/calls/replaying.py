"""The audit log as a replay needs it (gateway/policy/replay.py): a server's recorded calls (a grant's, for its own
rules), the last N or a time range, oldest first, each with its tool's risk; arguments are read only for the tools
whose rule checks them under either policy (most replays need none, which keeps 100,000 calls well under 2 s)."""

from __future__ import annotations

from datetime import datetime

from gateway import policies
from gateway.calls.audit import TRUNCATED
from gateway.models import Call, Grant, Server, Tool
from gateway.policy import Policy, parse_policy
from gateway.policy.replay import Recorded, Replay, needs_arguments, replay
from gateway.redaction import REDACTED

DEFAULT_LAST = 1000
MAX_LAST = 1_000_000
_ARGUMENT_CHUNK = 5000


def recorded(server: Server, before: Policy | None, after: Policy | None, *, grant: Grant | None = None,
             last: int | None = DEFAULT_LAST, since: datetime | None = None,
             until: datetime | None = None) -> list[Recorded]:
    tools = {name: (category, level, via or "") for name, category, level, via in
             Tool.objects.filter(server=server).values_list("name", "risk_category", "risk_level", "via__name")}
    rows = Call.objects.filter(server=server)
    if grant is not None:
        rows = rows.filter(grant=grant)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    rows = rows.order_by("-created_at", "-id").values_list("id", "grant_id", "tool_name", "created_at")
    if last is not None:
        rows = rows[:min(last, MAX_LAST)]
    picked = [row for row in reversed(list(rows)) if row[2] in tools]  # unknown tools: nothing to decide
    wanted = {name for name, (category, level, via) in tools.items()
              if needs_arguments(before, name, category, level, via) or needs_arguments(after, name, category, level,
                                                                                          via)}
    arguments: dict[int, object] = {}
    ids = [row[0] for row in picked if row[2] in wanted]
    for start in range(0, len(ids), _ARGUMENT_CHUNK):
        arguments.update(Call.objects.filter(pk__in=ids[start:start + _ARGUMENT_CHUNK])
                         .values_list("id", "arguments"))
    return [Recorded(call_id, str(grant_id), name, tools[name][0], tools[name][1], created.timestamp(),
                     arguments.get(call_id), tools[name][2])
            for call_id, grant_id, name, created in picked]


def replay_draft(server: Server, document: dict, *, grant: Grant | None = None, last: int | None = DEFAULT_LAST,
                 since: datetime | None = None, until: datetime | None = None) -> Replay:
    """What the draft `document` would have done with the recorded calls, beside the policy in force."""
    active = policies.applicable(server, grant)
    before = parse_policy(active.document) if active is not None else None
    after = parse_policy(document)
    calls = recorded(server, before, after, grant=grant, last=last, since=since, until=until)
    return replay(calls, before, after, server.slug, marker=REDACTED, cut_key=TRUNCATED)
