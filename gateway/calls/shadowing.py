"""A draft run in shadow (docs/POLICY.md, "Trying a draft"): on every live call of its server, the engine decides
the call again under the draft, beside the policy in force, and nothing of that is enforced. Where the draft would
have decided differently, one row is written (ShadowDivergence); agreeing calls cost one evaluation and no write.

The draft's limits are counted here, in this process's memory, over the live calls' times: with several gateway
processes each counts its own share, so a limit shows as reached later than it would be (said on the page).
Calls of grants with rules of their own are not shadowed (the draft is the server's policy)."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime

from gateway.models import ShadowDivergence, ShadowPolicy
from gateway.policy import Facts, Policy, evaluate, parse_policy
from gateway.policy.replay import kind_of

log = logging.getLogger("portcullis.shadow")

_POLICIES: dict[int, Policy | None] = {}  # shadow id -> its parsed draft (a shadow's document never changes)
_COUNTERS: dict[int, Counter] = {}  # shadow id -> counter key -> calls the draft let run, in this process
_PRUNE_EVERY = 10_000


def actual_kind(forward: bool, held: bool, refusal: str) -> str:
    """What the live call got, as a replay kind."""
    if held:
        return "approve"
    if forward:
        return "allow"
    return "limit" if refusal == "limit" else "deny"


def _policy(shadow_id: int) -> Policy | None:
    if shadow_id not in _POLICIES:
        if len(_POLICIES) > 64:
            _POLICIES.clear()
            _COUNTERS.clear()
        document = ShadowPolicy.objects.filter(pk=shadow_id).values_list("document", flat=True).first()
        _POLICIES[shadow_id] = parse_policy(document) if document is not None else None
    return _POLICIES[shadow_id]


def observe(shadow_id: int, facts: Facts, actual: str, call_id: int | None, grant_name: str, now: datetime) -> None:
    """Decide the live call under the shadow draft; keep a row when it would have differed. Never raises: a
    shadow is an experiment, and the call it watches must not notice it."""
    try:
        policy = _policy(shadow_id)
        if policy is None:
            return
        counters = _COUNTERS.setdefault(shadow_id, Counter())
        decision = evaluate(facts, policy, counters, now.timestamp())
        if decision.allowed:
            for res in decision.reservations:
                counters[res.key] += 1
            if len(counters) > _PRUNE_EVERY:  # windows that ended count nothing any more
                stamp = now.timestamp()
                for key in [k for k in counters if int(k.rsplit("|", 2)[-2]) + int(k.rsplit("|", 1)[-1]) < stamp]:
                    del counters[key]
        shadow = kind_of(decision)
        if shadow != actual:
            ShadowDivergence.objects.create(
                shadow_id=shadow_id, call_id=call_id,
                created_at=now, tool_name=facts.tool[:255], grant_name=grant_name[:100], actual=actual,
                shadow_kind=shadow, reason=(decision.message or f"decided by {decision.rule}")[:2000])
    except Exception as exc:  # never the watched call's problem
        log.warning("shadow %s could not decide a call: %s", shadow_id, exc)
