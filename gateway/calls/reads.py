"""The database half of the governed reads: resources/read, prompts/get and completion/complete.

A read is decided by the policy's `resources` or `prompts` rules (gateway/policy/engine.py `decide_read`; the
default applies when no rule matches, `hide: ["*"]` refuses everything) and audited like a tool call: one row,
written before the upstream sees the request, its tool name the method and what it reads
("resources/read truenas://users"), settled with the outcome. Listings of resources, templates and prompts are
filtered by the same decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway import grants
from gateway.calls import audit
from gateway.calls.admission import policy_for
from gateway.models import Call, Server
from gateway.policy import decide_read


@dataclass(frozen=True)
class ReadAdmission:
    call_id: int
    allowed: bool
    message: str = ""  # why not, for the agent


def admit_read(token: str, server: Server, method: str, kind: str, name: str, arguments: dict,
               now: datetime) -> ReadAdmission:
    """Decide and audit one read; raises grants.AuthFailure (nothing audited) or audit.AuditUnavailable."""
    grant = grants.authenticate(token, server, now)
    version, policy = policy_for(server, grant)
    decision = decide_read(kind, name, policy)
    allowed = decision.allowed
    call_id = audit.open_row(
        grant=grant, grant_name=grant.name, server=server, server_slug=server.slug,
        tool_name=f"{method} {name}"[:255], arguments=arguments, argument_hash=audit.argument_hash(arguments),
        created_at=now, decision=Call.Decision.ALLOW if allowed else Call.Decision.DENY,
        refusal="" if allowed else (decision.refusal or "policy"), reason="" if allowed else decision.reason,
        rule=decision.rule, policy_version_id=version, counters=[],
        outcome=Call.Outcome.PENDING if allowed else Call.Outcome.REFUSED,
        finished_at=None if allowed else now)
    return ReadAdmission(call_id, allowed, decision.message)


def settle_read(call_id: int, *, outcome: str, latency_ms: float, result_size: int | None, error: str,
                now: datetime) -> None:
    audit.close_row(call_id, outcome=outcome, latency_ms=latency_ms, result_size=result_size, error=error, now=now)


def readable(token: str, server: Server, kind: str, names: list[str], now: datetime) -> set[str]:
    """Which of these URIs (or URI templates, or prompt names) the grant's policy lets it see in a listing."""
    grant = grants.authenticate(token, server, now)
    _, policy = policy_for(server, grant)
    return {name for name in names if decide_read(kind, name, policy).allowed}
