"""The decision half of a tools/call, run in one database round trip before anything is forwarded.

Order (docs/ARCHITECTURE.md): authenticate → look the tool up → evaluate the policy → reserve counters →
write the audit row. `admit()` does all of it in one synchronous function (one thread hop from the async
endpoint); `settle()` records the outcome and gives reservations back when the upstream call failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.db import connection, transaction

from gateway import grants, policies, tokens
from gateway.calls import approvals, audit, continuations, dispatched, prepared, ratelimit, repeat_calls, shadowing
from gateway.models import Approval, Call, Grant, PolicyVersion, Server, ShadowPolicy, Tool
from gateway.policy import Decision, Facts, Policy, Reservation, escalated, evaluate, limit_message, parse_policy
from gateway.policy.dispatch import Shape
from gateway.telemetry import tracing
from gateway.tool_definitions import NEW_HELD


@dataclass
class Admission:
    """What the endpoint needs to answer or forward one call."""

    call_id: int | None
    forward: bool
    message: str = ""  # the refusal text the agent reads (isError result) when not forwarded
    reservations: tuple[Reservation, ...] = field(default_factory=tuple)
    grant_id: int | None = None
    held: Approval | None = None  # the call waits for this approval (a person decides in the dashboard)
    # A later round of a multi round-trip call (gateway/calls/continuations.py): what to send the upstream.
    continuation: continuations.Continuation | None = None
    refusal: str = ""  # why it was not forwarded ("limit", "policy", …), as its audit row says


# (version id, created) → parsed policy. Versions are immutable rows; the creation time guards against a
# reused primary key after deletions (SQLite may reuse the highest rowid).
_PARSED: dict[tuple, Policy] = {}
_PARSED_MAX = 512

# The hot path reads with fixed SQL: building these queries through the ORM cost more CPU than running them.
_POLICY_SQL = policies.applicable_sql("p.id, p.created_at", "%s")
_ADMIT_SQL: str | None = None


# The draft running in shadow on the server, unless the grant has rules of its own (gateway/calls/shadowing.py).
_SHADOW_SQL = (f"SELECT sh.id FROM {ShadowPolicy._meta.db_table} sh WHERE sh.server_id = %s AND sh.ended_at IS NULL "
               f"AND NOT EXISTS (SELECT 1 FROM {PolicyVersion._meta.db_table} gp WHERE gp.server_id = sh.server_id "
               "AND gp.grant_id = g.id AND gp.is_active = %s)")


def _admit_sql() -> str:
    """One round trip for everything a decision reads: the grant (grants.call_auth_sql), the tool by its exact
    name, and the active policy version (the grant's own first, else the server's)."""
    global _ADMIT_SQL
    if _ADMIT_SQL is None:
        _ADMIT_SQL = grants.call_auth_sql(
            extra_columns=(", t.id, t.risk_category, t.risk_level, t.definition_hash, t.dispatch, t.held_reason, "
                           f"({policies.applicable_sql('p.id', 'g.id')}), "
                           f"({policies.applicable_sql('p.created_at', 'g.id')}), "
                           f"({_SHADOW_SQL}), "
                           f"CASE WHEN (SELECT s2.updated_at FROM {Server._meta.db_table} s2 WHERE s2.id = %s) = %s "
                           "THEN 1 ELSE 0 END"),
            extra_from=(f" LEFT JOIN {Tool._meta.db_table} t ON t.server_id = %s AND t.name = %s "
                        "AND t.gone_at IS NULL AND t.via_id IS NULL"))
    return _ADMIT_SQL


def _parsed(version_id: int, created) -> Policy:
    """Versions are immutable rows, so the parsed policy is cached by (id, created): the creation time guards
    against a primary key reused after deletions (SQLite may reuse the highest rowid)."""
    key = (version_id, str(created))
    policy = _PARSED.get(key)
    if policy is None:
        prepared.needs_thread()
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        policy = _PARSED[key] = parse_policy(PolicyVersion.objects.get(pk=version_id).document)
    return policy


def policy_for(server: Server, grant: Grant | grants.CallGrant) -> tuple[int | None, Policy | None]:
    """(version id, parsed policy): the grant's own active policy for this server, else the server's."""
    with connection.cursor() as cursor:
        cursor.execute(_POLICY_SQL, [server.pk, True, grant.pk])
        row = cursor.fetchone()
    if row is None:
        return None, None
    return row[0], _parsed(row[0], row[1])


def facts_for(grant: Grant | grants.CallGrant, server: Server, tool: Tool, arguments: object, via: str = "") -> Facts:
    return Facts(grant=str(grant.pk), server=server.slug, tool=tool.name, risk_category=tool.risk_category,
                 risk_level=tool.risk_level, arguments=arguments, via=via)


class StaleServer(Exception):
    """The caller's copy of the server is not the registration as it is now (changed, or deleted and registered
    again): nothing was decided or written; load the server again and retry."""


def admit(token: str, server: Server, tool_name: str, arguments: object, now: datetime,
          request_state: object = None, session: str = "", current_server: bool = False) -> Admission:
    """Decide, reserve and audit one call. Raises grants.AuthFailure (nothing audited: no grant is known).
    With `current_server`, raises StaleServer (nothing written) when `server` is not the registration as it is
    now (its updated_at, read in the same query).

    `request_state` (a stateless-era agent's retry of an `input_required` round) makes it a continuation:
    see _continue(). `session` names the agent session for `scope: "session"` limits. A call of a dispatcher
    (gateway/policy/dispatch.py) is decided as a call of the action it names (gateway/calls/dispatched.py)."""
    grants.check_token_shape(token)
    prefix, params = tokens.prefix_of(token), _admit_params(token, server, tool_name, now)
    postgres = prepared.vendor() == "postgresql"
    if postgres and request_state is None and (known := repeat_calls.known(prefix, server.pk, tool_name)):
        admission = _admit_repeat(known, params, token, server, tool_name, arguments, now, session)
        if admission is not None:
            return admission
    row, text = prepared.fetchone(repeat_calls.read_sql(_admit_sql()) if postgres else _admit_sql(), params), None
    if postgres and row is not None:
        row, text = repeat_calls.split(row)
    if current_server and row is not None and not row[-1]:
        raise StaleServer(server.slug)
    grant = grants.check_call_auth(row, token, server, now, before_refresh=prepared.needs_thread)
    tool_id, category, level, tool_hash, dispatch, held, version, created, shadow, _ = row[grants.CALL_AUTH_COLUMNS:]
    if text is not None and tool_id is not None:  # kept only for an authenticated call of a tool it has
        repeat_calls.remember(prefix, server.pk, tool_name, row, text)
    if shadow is not None or request_state is not None:
        prepared.needs_thread()  # decided through the ORM; on the loop, before anything is written
    base = _base(grant, server, tool_name, arguments, now, tool_id, tool_hash)
    if tool_id is None:
        return _refuse(base, Call.Decision.DENY, "unknown_tool", _unknown_tool(server, tool_name), "", None, grant)
    policy = _parsed(version, created) if version is not None else None
    if held:  # a changed (or new) definition nobody has reviewed: nothing of it reaches the upstream
        return _refuse(base, Call.Decision.DENY, "review", held_message(tool_name, held), "", version, grant)
    facts_arguments, via = arguments, ""
    if dispatch is not None:
        action = dispatched.action_of(base, tool_id, dispatch, arguments, policy, now)
        if isinstance(action, dispatched.Refused):
            return _refuse(base, Call.Decision.DENY, action.refusal, action.message, "", version, grant)
        tool_id, category, level, tool_hash, facts_arguments = action
        via = tool_name
    facts = Facts(grant=str(grant.pk), server=server.slug, tool=base["tool_name"], risk_category=category,
                  risk_level=level, arguments=facts_arguments, via=via, session=session)
    decision = _evaluate(facts, policy, server, now)
    if request_state is not None:
        return _continue(base, decision, version, grant, request_state, now)
    def held_for(held: Decision) -> Admission:
        # Model instances only here: the approval rows refer to them.
        prepared.needs_thread()
        tool = Tool(id=tool_id, server_id=server.pk, name=base["tool_name"], risk_category=category,
                    risk_level=level, definition_hash=tool_hash)
        return _approval_needed(base, held, version, Grant(id=grant.pk, name=grant.name), tool, now)

    if decision.action == "approve" and decision.refusal is None:
        admission = held_for(decision)
    elif not decision.allowed:
        admission = _refuse(base, decision.action, decision.refusal or "policy", decision.message, decision.rule,
                            version, grant)
    else:  # a limit that says on_exceed: approve holds the call for a person instead of refusing it
        admission = _reserve_and_open(base, decision, version, grant, now,
                                      escalate=lambda full: held_for(escalated(full, decision.reservations,
                                                                               decision.approvers)))
    if shadow is not None:  # a draft tried on live calls: decided again, never enforced
        shadowing.observe(shadow, facts, shadowing.actual_kind(admission.forward, admission.held is not None,
                                                                admission.refusal), admission.call_id, grant.name,
                          now)
    return admission


def _admit_params(token: str, server: Server, tool_name: str, now: datetime) -> list:
    return [*grants.call_auth_params(server, now, prepared.adapt_time), server.pk, True, server.pk, True, server.pk,
            True, server.pk, prepared.adapt_time(server.updated_at), server.pk,
            audit.stored_text(tool_name),  # no tool has a NUL
            tokens.prefix_of(token)]


def _base(grant: grants.CallGrant, server: Server, tool_name: str, arguments: object, now: datetime,
          tool_id: int | None, tool_hash: str | None) -> dict:
    """What every audit row of this call says of it."""
    return {"grant": grant, "grant_name": grant.name, "server": server, "server_slug": server.slug,
            "tool_name": tool_name[:255], "arguments": arguments if isinstance(arguments, dict) else {},
            "argument_hash": audit.argument_hash(arguments), "created_at": now,
            "secret_paths": audit.secret_paths(tool_id, tool_hash, tool_name)}


def _evaluate(facts: Facts, policy: Policy | None, server: Server, now: datetime) -> Decision:
    with tracing.span("portcullis.policy", **{"portcullis.server": server.slug}):
        decision = evaluate(facts, policy, {}, now.timestamp())
        tracing.note(**{"portcullis.decision": decision.action, "portcullis.rule": decision.rule,
                        "portcullis.refusal": decision.refusal})
    return decision


def _admit_repeat(known: repeat_calls.Known, params: list, token: str, server: Server, tool_name: str,
                  arguments: object, now: datetime, session: str) -> Admission | None:
    """A call decided on the facts last read for this token and tool (and, for a dispatcher, on its action's row as
    last read), written only if the database still holds them (calls/repeat_calls.py). None when it was not:
    nothing was written or counted, and the caller decides the call again from a fresh read. A call the policy
    allows at once with at most one counter goes this way (refused here when the facts held but that counter is
    full), and so does a call the policy refuses; a held call, a draft in shadow or a grant whose `last_used_at`
    is due is decided from a fresh read."""
    row = known.row
    _, _, _, _, _, _, last_used_due, _ = row[:grants.CALL_AUTH_COLUMNS]
    tool_id, category, level, tool_hash, dispatch, held, version, created, shadow, current = \
        row[grants.CALL_AUTH_COLUMNS:]
    if tool_id is None or held or shadow is not None or not current or last_used_due:
        return None
    try:
        grant = grants.check_call_auth(row, token, server, now)
    except grants.AuthFailure:
        return None  # the fresh read says why, or finds what changed
    base = _base(grant, server, tool_name, arguments, now, tool_id, tool_hash)
    confirms = (repeat_calls.Confirm(_admit_sql(), params, known.text),)
    facts_arguments, via = arguments, ""
    if dispatch is not None:
        action = dispatched.known_action(base, tool_id, dispatch, arguments)
        if action is None:
            return None
        (_, category, level, _, facts_arguments), confirm = action
        confirms, via = (*confirms, confirm), tool_name
    policy = _parsed(version, created) if version is not None else None
    decision = _evaluate(Facts(grant=str(grant.pk), server=server.slug, tool=base["tool_name"],
                               risk_category=category, risk_level=level, arguments=facts_arguments, via=via,
                               session=session), policy, server, now)
    if decision.action == "approve" and decision.refusal is None:
        return None  # held for a person: through the ORM, from a fresh read
    if not decision.allowed:
        return _refuse_repeat(confirms, base, decision, version, grant)
    ctes, params, source, answers, taken = repeat_calls.statement(confirms, decision.reservations)
    try:
        call_id, confirmed, *full_at = audit.open_row_checked(
            ctes, params, source, answers=answers, counted=bool(taken),
            **_allowed_row(base, decision, decision.reservations, version, None, ""))
    except audit.AuditUnavailable as exc:
        return Admission(None, False, str(exc), grant_id=grant.pk)
    if call_id is not None:
        return Admission(call_id, True, "", decision.reservations, grant.pk)
    if not confirmed or not taken:
        return None  # the facts changed: decided again from a fresh read
    full = taken[full_at[0] - 1] if full_at else taken[0]
    if full.on_exceed == "approve":
        return None  # a person is to be asked: through the ORM, from a fresh read
    # The facts were confirmed and a counter is full: refused as _reserve_and_open() refuses it.
    return _refuse(base, Call.Decision.DENY, "limit", limit_message(full, now.timestamp()), full.rule, version, grant,
                   counters=[full.key])


def _refuse_repeat(confirms: tuple[repeat_calls.Confirm, ...], base: dict, decision: Decision, version,
                   grant: grants.CallGrant) -> Admission | None:
    """A repeat call the policy refuses: its refusal row is written by the statement that reads the facts again,
    only if they are those it was decided on (else None: nothing was written, and it is decided again from a
    fresh read). As admit() refuses it, in one round trip instead of two."""
    refusal, message = decision.refusal or "policy", decision.message
    ctes, params, source, _, _ = repeat_calls.statement(confirms, ())
    try:
        call_id, = audit.open_row_checked(ctes, params, source, answers=(), counted=False,
                                          **_refused_row(base, decision.action, refusal, message, decision.rule,
                                                         version, []))
    except audit.AuditUnavailable as exc:
        return Admission(None, False, f"{message} ({exc})", grant_id=grant.pk, refusal=refusal)
    if call_id is None:
        return None
    return Admission(call_id, False, message, (), grant.pk, refusal=refusal)


def held_message(name: str, held: str) -> str:
    """What an agent reads when it calls a tool held for a person's review."""
    if held == NEW_HELD:
        return (f"tool {name!r} is new on this server and has not been approved yet; an operator must review it in "
                "the Portcullis dashboard before it can be called. Use another tool meanwhile, or ask an operator.")
    return (f"tool {name!r} changed since it was approved; an operator must review the new definition in the "
            "Portcullis dashboard before it can be called. Use another tool meanwhile, or ask an operator.")


def _unknown_tool(server: Server, name: str) -> str:
    prepared.needs_thread()
    message = f"unknown tool {name!r}: it is not in this server's catalogue (names are case-sensitive)"
    via = Tool.objects.filter(server=server, name=audit.stored_text(name), via__isnull=False,  # PostgreSQL: no NUL
                              gone_at__isnull=True).values_list("via__name", "via__dispatch").first()
    if via is not None and via[1]:
        message += (f"; {name!r} is an action of the tool {via[0]!r}: call {via[0]!r} with "
                    f"{Shape.from_json(via[1]).action} = {name!r}")
    return message


@dataclass(frozen=True)
class _UseOnce:
    """A continuation round's single-use key, reserved like a counter of max 1 until the state expires."""

    key: str
    window_end: int
    max: int = 1


def _continue(base: dict, decision: Decision, version, grant: grants.CallGrant, request_state: object,
              now: datetime) -> Admission:
    """A later round of a call already admitted: authenticated and evaluated again, never reserved again.

    The sealed state must be the gateway's own, unexpired, and bound to this grant, server, tool and exact
    arguments. The policy decides again (a deny or hide now refuses; `approve` was satisfied when the first
    round was admitted, so it does not hold again). The call's counters are not reserved again: the first round
    counted the call. Each round's state is used once (its key taken with the audit row, in one commit), so a
    round cannot be replayed past a limit; the key is given back, like a reservation, when the upstream refused
    the round with a protocol error (it did not run), so that round may then be retried. Every round forwarded
    has its own audit row, written first: decision allow, no counters, reason "continues call #<first id>"."""
    binding = continuations.Binding(grant.pk, base["server"].pk, base["tool_name"], base["argument_hash"])
    try:
        continuation = continuations.unseal(request_state, binding=binding, now=now)
        if continuation.round_no > continuations.MAX_ROUNDS:
            raise continuations.Invalid(
                f"the call went on for more than {continuations.MAX_ROUNDS} input rounds and was stopped; "
                f"{continuations.START_AGAIN}")
    except continuations.Invalid as exc:
        return _refuse(base, Call.Decision.DENY, "continuation", str(exc), "", version, grant)
    if not (decision.allowed or (decision.action == "approve" and decision.refusal is None)):
        refused = _refuse(base, decision.action, decision.refusal or "policy", decision.message, decision.rule,
                          version, grant)
        refused.continuation = continuation  # a genuine state: its parked upstream call (if any) is cancelled
        return refused
    use = _UseOnce(continuation.use_key, continuation.expires_at)
    row = dict(base, decision=Call.Decision.ALLOW, rule=decision.rule, policy_version_id=version, counters=[],
               outcome=Call.Outcome.PENDING, reason=f"continues call #{continuation.first_call_id} "
                                                    f"(input round {continuation.round_no})")
    try:
        with transaction.atomic():
            ratelimit.take([use])
            call_id = audit.open_row(**row)
    except ratelimit.Full:
        message = (f"requestState is not valid for this call (this round was already answered with it; each "
                   f"requestState continues a call once): {continuations.START_AGAIN}")
        return _refuse(base, Call.Decision.DENY, "continuation", message, "", version, grant)
    except audit.AuditUnavailable as exc:
        return Admission(None, False, str(exc), grant_id=grant.pk)
    return Admission(call_id, True, "", (use,), grant.pk, continuation=continuation)


def _approval_needed(base: dict, decision: Decision, version, grant: Grant, tool: Tool, now: datetime) -> Admission:
    """Run now on an approval a person already gave for exactly this call (used once), or hold for one."""
    binding = approvals.Binding(grant=grant, server=base["server"], tool=tool, argument_hash=base["argument_hash"],
                                arguments=audit.stored_arguments(base["arguments"], base["argument_hash"],
                                                                 base["secret_paths"]),
                                policy_version_id=version, rule=decision.rule, why=decision.reason,
                                approvers=decision.approvers)
    approved = approvals.claim_approved(binding, now)
    if approved is not None:
        admission = _reserve_and_open(base, decision, version, grant, now, approval=approved,
                                      reason=approvals.approved_text(approved.pk))
        if not admission.forward:  # a limit refused it: the person's approval is not spent on nothing
            Approval.objects.filter(pk=approved.pk, state=Approval.State.USED).update(state=Approval.State.APPROVED)
        return admission
    try:
        pending = approvals.pending_for(binding, now)
    except approvals.TooManyPending as exc:  # the grant's queue is full: refused, audited, nothing held
        return _refuse(base, Call.Decision.APPROVE, "approvals", str(exc), decision.rule, version, grant)
    try:
        call_id = audit.open_row(**base, decision=Call.Decision.APPROVE, refusal="", rule=decision.rule,
                                 policy_version_id=version, outcome=Call.Outcome.PENDING, approval=pending,
                                 reason=f"waiting for approval {pending.public_id}")
    except audit.AuditUnavailable as exc:
        return Admission(None, False, str(exc), grant_id=grant.pk)
    finally:  # after the row, which says the agent waits on it (its card, the badge); without the row it can
        approvals.publish(pending)  # still be decided in the queue
    return Admission(call_id, False, "", decision.reservations, grant.pk, held=pending)


def release(admission: Admission, now: datetime) -> Admission:
    """The held call's approval was given: reserve its counters, take the approval (exactly once), forward. A
    counter whose limit escalates to a person (`on_exceed: approve`) and that filled meanwhile is passed over:
    the person's approval is what lets this call past it."""
    approval = admission.held
    reservations = admission.reservations
    while (full := ratelimit.reserve(reservations)) is not None and getattr(full, "on_exceed", "") == "approve":
        reservations = tuple(r for r in reservations if r.key != full.key)
    admission = replace(admission, reservations=reservations)
    if full is not None:
        message = limit_message(full, now.timestamp())
        _close_refused(admission.call_id, "limit", message, now)
        return Admission(admission.call_id, False, message, grant_id=admission.grant_id)
    if not approvals.take(approval, now):
        ratelimit.release(admission.reservations)
        message = (f"approval {approval.public_id} was already used by an identical call; "
                   "call again to ask for a new approval")
        _close_refused(admission.call_id, "approval", message, now)
        return Admission(admission.call_id, False, message, grant_id=admission.grant_id)
    if admission.call_id is not None:  # the audit row names who approved (both people, when two must)
        audit.note_reason(admission.call_id, approvals.approved_text(approval.pk))
    return Admission(admission.call_id, True, "", admission.reservations, admission.grant_id, held=approval)


def refuse_held(admission: Admission, refusal: str, message: str, now: datetime) -> None:
    _close_refused(admission.call_id, refusal, message, now)


def _close_refused(call_id: int | None, refusal: str, message: str, now: datetime) -> None:
    if call_id is not None:
        audit.settle_rows(Call.objects.filter(pk=call_id), now=now, outcome=Call.Outcome.REFUSED, refusal=refusal,
                          reason=message)


def _reserve_and_open(base: dict, decision: Decision, version, grant: grants.CallGrant | Grant, now: datetime,
                      approval: Approval | None = None,
                      escalate: Callable[[Reservation], Admission] | None = None, reason: str = "") -> Admission:
    """Counters and the audit row in one transaction: one commit, and a failed audit write takes the
    reservation back with it (nothing is forwarded, so nothing is consumed). A full counter whose limit escalates
    (`on_exceed: approve`) holds the call for a person (`escalate`); under a person's approval it is passed over."""
    reservations = decision.reservations
    while True:
        try:
            return _open_reserving(base, decision, reservations, version, grant, approval, reason)
        except ratelimit.Full as exc:
            full = exc.reservation
            if full.on_exceed == "approve" and approval is not None:
                reservations = tuple(r for r in reservations if r.key != full.key)
                continue
            if full.on_exceed == "approve" and escalate is not None:
                return escalate(full)
            message = limit_message(full, now.timestamp())
            return _refuse(base, Call.Decision.DENY, "limit", message, full.rule, version, grant,
                           counters=[full.key])
        except audit.AuditUnavailable as exc:
            return Admission(None, False, str(exc), grant_id=grant.pk)


def _allowed_row(base: dict, decision: Decision, reservations: tuple, version, approval: Approval | None,
                 reason: str) -> dict:
    return dict(base, decision=Call.Decision.APPROVE if approval else Call.Decision.ALLOW, rule=decision.rule,
                policy_version_id=version, approval=approval, counters=[r.key for r in reservations],
                outcome=Call.Outcome.PENDING, reason=reason)


def _open_reserving(base: dict, decision: Decision, reservations: tuple, version, grant, approval,
                    reason: str = "") -> Admission:
    row = _allowed_row(base, decision, reservations, version, approval, reason)
    if not reservations:
        call_id = audit.open_row(**row)
    elif len(reservations) == 1 and prepared.vendor() == "postgresql":
        # One statement: a busy counter's row lock is never held across a round trip (or the GIL).
        only = reservations[0]
        call_id = audit.open_row_reserving(ratelimit.RESERVE_SQL, [only.key, only.window_end, only.max], **row)
        if call_id is None:
            raise ratelimit.Full(only)
    elif prepared.vendor() == "postgresql":  # several counters, all or none, in one statement too
        ordered, params = ratelimit.together(reservations)
        taken, source, which = ratelimit.taking_all()
        call_id, full_at = audit.open_row_checked(taken, params, source, answers=(which,), counted=True, **row)
        if call_id is None:
            raise ratelimit.Full(ordered[full_at - 1])
    else:
        with prepared.transaction():
            ratelimit.take(reservations)
            call_id = audit.open_row(**row)
    return Admission(call_id, True, "", reservations, grant.pk)


def _refuse(base: dict, decision: str, refusal: str, message: str, rule: str, version,
            grant: grants.CallGrant | Grant, counters: list[str] | None = None) -> Admission:
    try:
        call_id = audit.open_row(**_refused_row(base, decision, refusal, message, rule, version, counters or []))
    except audit.AuditUnavailable as exc:
        return Admission(None, False, f"{message} ({exc})", grant_id=grant.pk, refusal=refusal)
    return Admission(call_id, False, message, (), grant.pk, refusal=refusal)


def _refused_row(base: dict, decision: str, refusal: str, message: str, rule: str, version,
                 counters: list[str]) -> dict:
    return dict(base, decision=decision, refusal=refusal, reason=message, rule=rule, policy_version_id=version,
                counters=counters, outcome=Call.Outcome.REFUSED)


def settle(admission: Admission, *, outcome: str, latency_ms: float, result_size: int | None, error: str,
           now: datetime) -> None:
    """Record the upstream outcome. A call the upstream refused with a protocol error (so the tool did not run)
    gives its reservations back, as PolicyLayer does; a tool error, a timeout or an interruption keeps them,
    because the tool may have run — an agent must not get past a limit by making calls time out."""
    if outcome != Call.Outcome.PROTOCOL_ERROR or not admission.reservations:
        if admission.call_id is not None:  # one statement: autocommit, no transaction round trips
            audit.close_row(admission.call_id, outcome=outcome, latency_ms=latency_ms, result_size=result_size,
                            error=error, now=now)
        return
    prepared.needs_thread()
    with transaction.atomic():
        ratelimit.release(admission.reservations)
        if admission.call_id is not None:
            audit.close_row(admission.call_id, outcome=outcome, latency_ms=latency_ms, result_size=result_size,
                            error=error, now=now)


def settle_many(outcomes: list[tuple[Admission, dict]]) -> None:
    """Several calls' settle() in one transaction: one commit for all of them (see dbthreads.Batch). Giving a
    reservation back (a protocol error) goes through the ORM, so such a batch is one Django atomic() block."""
    releasing = any(f["outcome"] == Call.Outcome.PROTOCOL_ERROR and a.reservations for a, f in outcomes)
    if releasing:
        prepared.needs_thread()
    with transaction.atomic() if releasing else prepared.transaction():
        for admission, fields in outcomes:
            settle(admission, **fields)
