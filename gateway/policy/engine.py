"""Portcullis policy engine: evaluate tool calls against a policy (parsed by gateway/policy/document.py).

This module is pure on purpose: standard library only, no I/O, no clock reads
(the caller passes `now`).  Every decision is therefore reproducible from its
inputs, which is what lets us test "nothing slips through" exhaustively.

Safety rules that shape the code below:
* deny by default: the only way to get "allow"/"approve" is to pass every step;
* an error never allows: evaluate() and visibility() catch everything and
  turn it into a refusal with refusal == "error";
* parse_policy() collects ALL problems so an operator can fix a policy in one go.

docs/POLICY.md is the reference for the JSON format and the evaluation order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# The document half of the engine, re-exported so `gateway.policy` stays the one place callers import from.
from gateway.policy.document import *  # noqa: F403
from gateway.policy.document import (  # private helpers the evaluation shares with the parser
    MISSING,
    ArgSchema,
    Limit,
    Policy,
    Predicate,
    PropertySchema,
    Rule,
    _dump,
    _Index,
    _is_int,
    _is_number,
    _json_type,
    _quote,
    _window_text,
    pointer_join,
)

# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Facts:
    grant: str
    server: str
    tool: str
    risk_category: str
    risk_level: str
    arguments: object
    # The dispatcher ("umbrella") tool the call came through, when `tool` is one of its actions: the name a
    # refusing rule or `hide` entry may name to refuse every action (docs/POLICY.md "Dispatcher tools").
    via: str = ""
    # The agent session the call belongs to, for `scope: "session"` limits (a stateless-era agent's requests
    # all belong to one session per grant: see docs/POLICY.md "Scopes").
    session: str = ""


@dataclass(frozen=True)
class Reservation:
    key: str
    counter: str
    scope: str
    max: int
    window: int
    window_start: int
    window_end: int
    rule: str
    on_exceed: str = "deny"  # "approve": past max, the call waits for a person instead of being refused


@dataclass(frozen=True)
class Decision:
    action: str
    refusal: str | None
    reason: str
    message: str
    rule: str
    reservations: tuple[Reservation, ...] = ()
    retry_after: int | None = None
    approvers: int = 1  # different people who must approve, when the call is held for approval

    @property
    def allowed(self) -> bool:
        return self.action == "allow" and self.refusal is None


class EvaluationError(Exception):
    """A type mismatch or bug while evaluating: always turned into a refusal."""

    def __init__(self, what: str, pointer: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.pointer = pointer


def _refuse(action: str, refusal: str, reason: str, message: str, rule: str) -> Decision:
    return Decision(action, refusal, reason, message, rule)


def _denied(refusal: str, reason: str, rule: str, action: str = "deny") -> Decision:
    return _refuse(action, refusal, reason, f"denied by policy: {reason}", rule)


def _error_decision(what: str, pointer: str) -> Decision:
    reason = f"{what} at {pointer or '(document)'}"
    return _refuse("deny", "error", reason, f"policy error: {reason}", pointer)


def _visible(rule: str) -> Decision:
    return Decision("allow", None, "", "", rule)


NO_POLICY = _denied("policy", "no active policy for this server", "")
NOT_AN_OBJECT = _refuse("deny", "arguments", "arguments must be a JSON object", "arguments must be a JSON object", "")


def _hidden(tool: str, rule: str) -> Decision:
    return _denied("hidden", f"tool {_quote(tool)} is hidden by this policy", rule, action="hide")


def _hide_index(index: _Index, tool: str) -> int | None:
    """First `hide` entry (by position) that matches the tool."""
    found = index.hide_exact.get(tool)
    for i, match in index.hide_globs:
        if found is not None and i > found:
            break
        if match(tool):
            return i
    return found


READ_WHAT = {"resources": "resource", "prompts": "prompt"}


def decide_read(kind: str, name: str, policy: Policy | None) -> Decision:
    """May the grant read this resource (`kind` "resources", `name` its URI) or get this prompt ("prompts", its
    name)? The kind's exact rule, else its most specific glob, else the policy's default. `hide: ["*"]` refuses
    everything. Never raises."""
    try:
        if policy is None:
            return NO_POLICY
        what = f"{READ_WHAT[kind]} {_quote(name)}"
        if "*" in policy.hide:
            return _denied("hidden", f"{what}: this policy hides everything", pointer_join("/hide"))
        rule = policy.index.reads[kind].find(name)
        if rule is not None:
            if rule.action == "allow":
                return _visible(rule.pointer)
            return _refuse("deny", "policy", f"{what} is denied by {rule.pointer}",
                           rule.on_deny or f"denied by policy: {what} ({rule.pointer})", rule.pointer)
        if policy.default == "allow":
            return _visible("/default")
        reason = f"{what}: not allowed by /{kind}"
        return _refuse("deny", "policy", reason, policy.on_deny or f"denied by policy: {reason}", "/default")
    except Exception as err:  # whatever went wrong, an error must never allow
        return _error_decision(f"unexpected {type(err).__name__}", "")


def select_rule(facts: Facts, policy: Policy) -> Rule:
    """Step 2: exact tool > globs (longest first) > risk category > risk level > default."""
    index = policy.index
    rule = index.exact.get(facts.tool)
    if rule is not None:
        return rule
    for match, candidate in index.globs:
        if match(facts.tool):
            return candidate
    return index.categories.get(facts.risk_category) or index.levels.get(facts.risk_level) or index.default_rule


def _rule_refusal(rule: Rule, tool: str, policy: Policy) -> Decision | None:
    """Step 3: the rule's own action (hide / deny refuse; allow / approve go on)."""
    if rule.action == "hide":
        return _hidden(tool, rule.pointer)
    if rule.action != "deny":
        return None
    if rule.key is None:
        reason = policy.on_deny or f"tool {_quote(tool)} is not allowed by this policy (default: deny)"
    else:
        reason = rule.on_deny or f"tool {_quote(tool)} is denied by rule {rule.pointer}"
    return _denied("policy", reason, rule.pointer)


def _via_refusal(facts: Facts, policy: Policy) -> Decision | None:
    """An action of a dispatcher: a `hide` entry or an exact deny/hide rule naming the dispatcher itself refuses
    every one of its actions (an allow or approve rule on it gives its actions nothing)."""
    if not isinstance(facts.via, str):
        raise EvaluationError("dispatcher name is not a string")
    hidden_at = _hide_index(policy.index, facts.via)
    if hidden_at is not None:
        return _denied("hidden", f"tool {_quote(facts.tool)} is an action of {_quote(facts.via)}, which this policy "
                                 "hides", f"/hide/{hidden_at}", action="hide")
    rule = policy.index.exact.get(facts.via)
    if rule is not None and rule.action in ("deny", "hide"):
        refused = _rule_refusal(rule, facts.via, policy)
        reason = f"tool {_quote(facts.tool)} is an action of {_quote(facts.via)}: {refused.reason}"
        return _refuse(refused.action, refused.refusal or "policy", reason,
                       rule.on_deny or f"denied by policy: {reason}", rule.pointer)
    return None


def _choose(facts: Facts, policy: Policy) -> Decision | Rule:
    """Steps 1-3: a refusing Decision, or the rule that lets the call go on."""
    if not isinstance(facts.tool, str):
        raise EvaluationError("tool name is not a string")
    if facts.via:
        refused = _via_refusal(facts, policy)
        if refused is not None:
            return refused
    hidden_at = _hide_index(policy.index, facts.tool)
    if hidden_at is not None:
        return _hidden(facts.tool, f"/hide/{hidden_at}")
    rule = select_rule(facts, policy)
    return _rule_refusal(rule, facts.tool, policy) or rule


# ---------------------------------------------------------------- predicates


def _lookup(args: Any, steps: tuple[tuple[str, int | None], ...]) -> Any:
    current = args
    for key, index in steps:
        if isinstance(current, dict):
            current = current.get(key, MISSING)
        elif isinstance(current, list) and index is not None and index < len(current):
            current = current[index]
        else:
            return MISSING
        if current is MISSING:
            return MISSING
    return current


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: type-strict (true != 1, "1" != 1) but 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return False


def _number(pred: Predicate, found: Any) -> Any:
    if not _is_number(found):
        raise EvaluationError(f"{pred.path} is not a number (got {_json_type(found)})")
    return found


def _regex(pred: Predicate, found: Any) -> bool:
    if not isinstance(found, str):
        raise EvaluationError(f"{pred.path} is not a string (got {_json_type(found)})")
    return pred.regex.search(found) is not None


def _contains(pred: Predicate, found: Any) -> bool:
    if isinstance(found, list):
        return any(json_equal(item, pred.value) for item in found)
    if not isinstance(found, str):
        raise EvaluationError(f"{pred.path} is not a string or a list (got {_json_type(found)})")
    if not isinstance(pred.value, str):
        raise EvaluationError(f"{pred.path} is a string but the contains value is not")
    return pred.value in found


_OP_TESTS: dict[str, Callable[[Predicate, Any], bool]] = {
    "eq": lambda p, v: json_equal(v, p.value),
    "neq": lambda p, v: not json_equal(v, p.value),
    "in": lambda p, v: any(json_equal(v, x) for x in p.value),
    "not_in": lambda p, v: not any(json_equal(v, x) for x in p.value),
    "lt": lambda p, v: _number(p, v) < p.value,
    "lte": lambda p, v: _number(p, v) <= p.value,
    "gt": lambda p, v: _number(p, v) > p.value,
    "gte": lambda p, v: _number(p, v) >= p.value,
    "regex": _regex,
    "contains": _contains,
}


def predicate_holds(pred: Predicate, args: Any) -> bool:
    """Does the predicate hold? Raises EvaluationError (with pointer) on mismatch."""
    try:
        found = _lookup(args, pred.steps)
        if pred.op == "exists":
            return (found is not MISSING) == pred.value
        return found is not MISSING and _OP_TESTS[pred.op](pred, found)
    except EvaluationError as err:
        raise EvaluationError(err.what, pred.pointer) from None
    except Exception as err:  # a bug must still deny, and say where
        raise EvaluationError(f"unexpected {type(err).__name__} while checking {pred.path}", pred.pointer) from None


_REQUIRE_TEXT = {
    "eq": "must equal {v}", "neq": "must not equal {v}", "in": "must be one of {v}",
    "not_in": "must not be one of {v}", "lt": "must be less than {v}", "lte": "must be at most {v}",
    "gt": "must be greater than {v}", "gte": "must be at least {v}", "regex": "must match {v}",
    "contains": "must contain {v}",
}


MAX_VALUE_TEXT = 500  # a huge operand would drown the message an agent has to act on


def _short(text: str) -> str:
    return text if len(text) <= MAX_VALUE_TEXT else text[: MAX_VALUE_TEXT - 1] + "…"


def describe_requirement(pred: Predicate) -> str:
    """Why a `require` predicate failed, e.g. 'args.reason must exist'."""
    if pred.op == "exists":
        return f"{pred.path} must {'exist' if pred.value else 'not exist'}"
    value = pred.value if pred.op == "regex" else pred.value_json  # a pattern reads better unquoted
    return f"{pred.path} " + _REQUIRE_TEXT[pred.op].format(v=_short(value))


def describe_condition(pred: Predicate) -> str:
    """A `deny_if` predicate as text, e.g. 'args.amount gt 10000'."""
    if pred.op == "exists":
        return f"{pred.path} {'exists' if pred.value else 'is missing'}"
    value = pred.value if pred.op == "regex" else pred.value_json
    return f"{pred.path} {pred.op} {_short(value)}"


# ---------------------------------------------------------------- arguments schema


_TYPE_TESTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "number": (_is_number, "a number"),
    "integer": (lambda v: _is_int(v) or (_is_number(v) and float(v).is_integer()), "an integer"),
    "boolean": (lambda v: isinstance(v, bool), "a boolean"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "array": (lambda v: isinstance(v, list), "an array"),
}


def _property_failure(prop: PropertySchema, value: Any) -> tuple[str, str] | None:
    """(what is wrong, keyword) for the first failing keyword, in canonical order."""
    if prop.type is not None and not _TYPE_TESTS[prop.type][0](value):
        return f"must be {_TYPE_TESTS[prop.type][1]}", "type"
    if prop.enum is not None and not any(json_equal(value, x) for x in prop.enum):
        return f"must be one of {prop.enum_json}", "enum"
    if prop.const is not MISSING and not json_equal(value, prop.const):
        return f"must be {prop.const_json}", "const"
    if prop.regex is not None:
        # A non-string cannot match a pattern: refuse instead of skipping the check.
        if not isinstance(value, str) or prop.regex.search(value) is None:
            return (f"must match {prop.pattern}" if isinstance(value, str) else "must be a string"), "pattern"
    if prop.minimum is not None and not (_is_number(value) and value >= prop.minimum):
        return (f"must be at least {_dump(prop.minimum)}" if _is_number(value) else "must be a number"), "minimum"
    if prop.maximum is not None and not (_is_number(value) and value <= prop.maximum):
        return (f"must be at most {_dump(prop.maximum)}" if _is_number(value) else "must be a number"), "maximum"
    if prop.max_length is not None and not (isinstance(value, str) and len(value) <= prop.max_length):
        text = f"must be at most {prop.max_length} characters long" if isinstance(value, str) else "must be a string"
        return text, "maxLength"
    return None


def schema_failure(schema: ArgSchema, args: dict) -> tuple[str, str] | None:
    """(message, pointer) of the first failing schema check, or None."""
    for i, name in enumerate(schema.required):
        if name not in args:
            return f"argument {_quote(name)} is required", pointer_join(schema.pointer, "required", i)
    for i, name in enumerate(schema.forbidden):
        if name in args:
            return f"argument {_quote(name)} is not allowed", pointer_join(schema.pointer, "forbidden", i)
    for prop in schema.properties:
        if prop.name in args:
            failure = _property_failure(prop, args[prop.name])
            if failure:
                return f"argument {_quote(prop.name)} {failure[0]}", pointer_join(prop.pointer, failure[1])
    return None


def _check_arguments(rule: Rule, args: dict) -> Decision | None:
    """Step 4: schema, then every `require`, then every `deny_if`."""
    if rule.arguments is not None:
        failure = schema_failure(rule.arguments, args)
        if failure:
            return _refuse("deny", "arguments", failure[0], failure[0], failure[1])
    for pred in rule.require:
        if not predicate_holds(pred, args):
            reason = describe_requirement(pred)
            return _refuse("deny", "arguments", reason, f"argument check failed: {reason}", pred.pointer)
    for pred in rule.deny_if:
        if predicate_holds(pred, args):
            return _denied("arguments", rule.on_deny or describe_condition(pred), pred.pointer)
    return None


# ---------------------------------------------------------------- limits


def _key_part(text: str) -> str:
    # Keep keys unambiguous even if an id contains the separators.
    return text.replace("%", "%25").replace("|", "%7C").replace("/", "%2F")


def _scope_id(scope: str, facts: Facts) -> str:
    if not (isinstance(facts.server, str) and isinstance(facts.grant, str)):
        raise EvaluationError("server and grant must be strings")
    if scope == "grant":
        return f"{_key_part(facts.server)}/{_key_part(facts.grant)}"
    if scope == "session":
        if not isinstance(facts.session, str) or not facts.session:
            raise EvaluationError("a session limit applies but the call belongs to no agent session")
        return f"{_key_part(facts.server)}/{_key_part(facts.grant)}/{_key_part(facts.session)}"
    return _key_part(facts.server) if scope == "server" else "*"


def reservation(limit: Limit, facts: Facts, now: float) -> Reservation:
    """The counter slot this call would use: fixed window aligned to the UTC epoch."""
    window = limit.window
    start = int(now // window) * window
    key = f"{limit.counter}|{limit.scope}|{_scope_id(limit.scope, facts)}|{window}|{start}"
    return Reservation(key, limit.counter, limit.scope, limit.max, window, start, start + window, limit.pointer,
                       limit.on_exceed)


def reservations_for(rule: Rule, policy: Policy, facts: Facts, now: float) -> tuple[Reservation, ...]:
    """Unique reservations sorted by key (a fixed order prevents store deadlocks)."""
    if not _is_number(now):
        raise EvaluationError("the clock value is not a finite number")
    by_key: dict[str, Reservation] = {}
    for limit in rule.limits + policy.all_limits:
        res = reservation(limit, facts, now)
        prior = by_key.get(res.key)
        # One shared counter: the stricter max wins; on equal maxes, refusing is stricter than escalating.
        if prior is None or res.max < prior.max or (res.max == prior.max and res.on_exceed == "deny"
                                                    and prior.on_exceed != "deny"):
            by_key[res.key] = res
    return tuple(by_key[key] for key in sorted(by_key))


def retry_after(res: Reservation, now: float) -> int:
    return max(1, math.ceil(res.window_end - now))


def limit_message(res: Reservation, now: float) -> str:
    """The refusal text for an exhausted counter (also used by the gateway's store)."""
    return (f"rate limit {res.counter} exceeded: {res.max} per {_window_text(res.window)}, "
            f"retry in {retry_after(res, now)} s")


def _exhausted(reservations: tuple[Reservation, ...], counters: Mapping[str, int], now: float) -> Reservation | None:
    """The exhausted reservation with the longest wait (first by key on ties)."""
    worst = None
    for res in reservations:
        used = counters.get(res.key, 0)
        if not _is_number(used):
            raise EvaluationError(f"counter {res.key} has a non-numeric value", res.rule)
        if used >= res.max and (worst is None or res.window_end > worst.window_end):
            worst = res
    return worst


def _apply_limits(rule: Rule, policy: Policy, facts: Facts, counters: Mapping[str, int], now: float) -> Decision:
    """Step 5: refuse on an exhausted counter (or, where the limit says `on_exceed: approve` and every exhausted
    counter says so, hold the call for a person), else allow/approve with reservations."""
    reservations = reservations_for(rule, policy, facts, now)
    refusing = tuple(r for r in reservations if r.on_exceed != "approve")
    worst = _exhausted(refusing, counters, now)
    if worst is not None:
        message = limit_message(worst, now)
        return Decision("deny", "limit", message, message, worst.rule, (), retry_after(worst, now))
    escalating = tuple(r for r in reservations if r.on_exceed == "approve")
    worst = _exhausted(escalating, counters, now)
    if worst is not None:
        full = {r.key for r in escalating if counters.get(r.key, 0) >= r.max}
        return escalated(worst, tuple(r for r in reservations if r.key not in full), rule.approvers)
    return Decision(rule.action, None, "", "", rule.pointer, reservations, approvers=rule.approvers)


def escalated(full: Reservation, reservations: tuple[Reservation, ...], approvers: int = 1) -> Decision:
    """A call past a limit that escalates: held for a person's approval, reserving every other counter (a full
    one cannot count it; the person's approval is what lets this one call past)."""
    message = escalation_message(full)
    kept = tuple(r for r in reservations if r.key != full.key)
    return Decision("approve", None, message, message, full.rule, kept, approvers=approvers)


def escalation_message(res: Reservation) -> str:
    return (f"rate limit {res.counter} reached ({res.max} per {_window_text(res.window)}): this call waits for a "
            "person's approval")


# ---------------------------------------------------------------- entry points


def _evaluate(facts: Facts, policy: Policy | None, counters: Mapping[str, int], now: float) -> Decision:
    if policy is None:
        return NO_POLICY
    args = {} if facts.arguments is None else facts.arguments
    if not isinstance(args, dict):
        return NOT_AN_OBJECT
    chosen = _choose(facts, policy)
    if isinstance(chosen, Decision):
        return chosen
    return _check_arguments(chosen, args) or _apply_limits(chosen, policy, facts, counters, now)


def evaluate(facts: Facts, policy: Policy | None, counters: Mapping[str, int], now: float) -> Decision:
    """Decide one tool call (see docs/POLICY.md for the numbered steps). Never raises.

    `counters` (counter key -> calls already counted in its window) makes the decision refuse a call whose limit
    is used up. The gateway passes {} and leaves exactness to the database: ratelimit.reserve() takes the
    decision's reservations atomically and refuses there, across processes. Previews ("what would the 11th call
    get?") and the cases-as-data tests pass real counts."""
    try:
        return _evaluate(facts, policy, counters, now)
    except EvaluationError as err:
        return _error_decision(err.what, err.pointer)
    except Exception as err:  # whatever went wrong, an error must never allow
        return _error_decision(f"unexpected {type(err).__name__}", "")


def visibility(facts: Facts, policy: Policy | None) -> Decision:
    """May this grant see the tool in tools/list? Steps 0-3 only; never raises."""
    try:
        if policy is None:
            return NO_POLICY
        chosen = _choose(facts, policy)
        if isinstance(chosen, Rule):
            return _visible(chosen.pointer)
        if chosen.refusal == "policy" and policy.show_denied:
            return _visible(chosen.rule)  # listed, but evaluate() still refuses with the reason
        return chosen
    except EvaluationError as err:
        return _error_decision(err.what, err.pointer)
    except Exception as err:
        return _error_decision(f"unexpected {type(err).__name__}", "")
