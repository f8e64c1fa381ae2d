"""Replay: what a draft policy would have done with calls the audit log recorded, beside what the policy in force
does with them. Pure: the engine decides every call (it is not changed for this), counters are simulated over the
calls' real timestamps, and a call whose decision depends on an argument the log redacted or cut is "unknown",
never guessed. The calls come from gateway/calls/replaying.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.policy.document import MISSING, Policy, Rule
from gateway.policy.engine import Decision, Facts, _choose, _lookup, evaluate

# What a replayed call gets: run (allow), refused by the policy (deny, hide, arguments), refused by a limit, held
# for a person (approve), or not decidable from the log (unknown).
KINDS = ("allow", "deny", "limit", "approve", "unknown")
SHOWN_MAX = 200  # affected calls listed (the counts cover all of them)
REPLAY_SESSION = "replay"  # the log keeps no sessions: a grant's calls count as one session (never looser)


@dataclass(frozen=True)
class Recorded:
    """One audit-log row as the replay needs it."""

    call_id: int
    grant: str
    tool: str
    risk_category: str
    risk_level: str
    at: float  # Unix seconds
    arguments: object = None  # what the log kept (redacted); None: not needed by either policy
    via: str = ""


@dataclass(frozen=True)
class Change:
    call_id: int
    tool: str
    grant: str
    at: float
    before: str  # a KIND
    after: str
    reason: str  # what the draft's decision says (the refusal an agent would read, or the rule)


@dataclass
class Replay:
    calls: int = 0
    changed: int = 0
    pairs: Counter = field(default_factory=Counter)  # (before kind, after kind) -> calls
    after: Counter = field(default_factory=Counter)  # kind under the draft -> calls
    before: Counter = field(default_factory=Counter)
    unknown: int = 0  # calls the log cannot decide (under either policy)
    shown: list[Change] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The result in words, one line each, most calls first."""
        if not self.calls:
            return ["no recorded calls to replay"]
        out = [f"{self.calls} recorded call{'s' if self.calls != 1 else ''} replayed: "
               f"{self.changed} would be decided differently"]
        for (before, after), n in self.pairs.most_common():
            out.append(f"  {n} {WORDS[before]} → {WORDS[after]}")
        if self.unknown:
            out.append(f"  {self.unknown} unknown: the decision depends on an argument the audit log redacted or "
                       "cut")
        return out


WORDS = {"allow": "allowed", "deny": "denied", "limit": "refused by a limit", "approve": "needing approval",
         "unknown": "unknown"}


def kind_of(decision: Decision) -> str:
    if decision.refusal == "limit":
        return "limit"
    if decision.refusal is None and decision.action == "approve":
        return "approve"
    return "allow" if decision.allowed else "deny"


def _hidden(value: object, marker: str) -> bool:
    if isinstance(value, str):
        return marker in value
    if isinstance(value, dict):
        return any(_hidden(v, marker) for v in value.values())
    if isinstance(value, list):
        return any(_hidden(v, marker) for v in value)
    return False


def checks_arguments(rule: Rule) -> bool:
    return bool(rule.arguments or rule.require or rule.deny_if)


def depends_on_hidden(rule: Rule, arguments: object, marker: str, cut_key: str) -> bool:
    """Does the rule's argument check read a value the log did not keep whole?"""
    if not checks_arguments(rule):
        return False
    if not isinstance(arguments, dict) or cut_key in arguments:
        return True  # the log kept only a prefix: every argument check is blind
    for pred in rule.require + rule.deny_if:
        found = _lookup(arguments, pred.steps)
        if found is not MISSING and _hidden(found, marker):
            return True
    if rule.arguments is not None:
        return any(prop.name in arguments and _hidden(arguments[prop.name], marker)
                   for prop in rule.arguments.properties)
    return False


class _Side:
    """One policy replayed: its counters over the calls' timestamps."""

    def __init__(self, policy: Policy | None, server: str, marker: str, cut_key: str) -> None:
        self.policy, self.server, self.marker, self.cut_key = policy, server, marker, cut_key
        self.counters: Counter = Counter()

    def decide(self, call: Recorded) -> tuple[str, str]:
        facts = Facts(grant=call.grant, server=self.server, tool=call.tool, risk_category=call.risk_category,
                      risk_level=call.risk_level, arguments=call.arguments if call.arguments is not None else {},
                      via=call.via, session=REPLAY_SESSION)
        if self.policy is not None and call.arguments is not None:  # arguments are loaded only where rules read them
            chosen = _choose(facts, self.policy)
            if isinstance(chosen, Rule) and depends_on_hidden(chosen, call.arguments, self.marker, self.cut_key):
                return "unknown", f"depends on an argument the log did not keep ({chosen.pointer})"
        decision = evaluate(facts, self.policy, self.counters, call.at)
        if decision.allowed:
            for res in decision.reservations:
                self.counters[res.key] += 1
        return kind_of(decision), decision.message or decision.rule


def replay(calls: Iterable[Recorded], before: Policy | None, after: Policy | None, server: str, *,
           marker: str = "[REDACTED]", cut_key: str = "_truncated") -> Replay:
    """Replay the calls (oldest first) under the policy in force (`before`) and the draft (`after`)."""
    result = Replay()
    old, new = _Side(before, server, marker, cut_key), _Side(after, server, marker, cut_key)
    for call in calls:
        result.calls += 1
        was, _ = old.decide(call)
        will, reason = new.decide(call)
        result.before[was] += 1
        result.after[will] += 1
        if "unknown" in (was, will):
            result.unknown += 1
        if was != will:
            result.changed += 1
            result.pairs[(was, will)] += 1
            if len(result.shown) < SHOWN_MAX:
                result.shown.append(Change(call.call_id, call.tool, call.grant, call.at, was, will, reason))
    return result


def needs_arguments(policy: Policy | None, tool: str, risk_category: str, risk_level: str, via: str = "") -> bool:
    """Whether deciding this tool under the policy reads its arguments (so the log's must be loaded)."""
    if policy is None:
        return False
    chosen = _choose(Facts("", "", tool, risk_category, risk_level, {}, via=via), policy)
    return isinstance(chosen, Rule) and checks_arguments(chosen)
