"""Tests for gateway/policy/engine.py: selection, actions, operators, schema, limits, errors, round trip."""

from __future__ import annotations

import ast
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import (
    Decision,
    Facts,
    PolicyInvalid,
    Problem,
    Reservation,
    canonical_json,
    evaluate,
    export_policy,
    limit_message,
    load_policy_text,
    parse_policy,
    visibility,
)
from gateway.policy import engine as P
from tests.policy import policy_cases as C
from tests.policy.policy_cases import SEED, doc, limit

NOW = 1_767_225_600 + 45 * 60 + 30  # 2026-01-01 00:45:30 UTC
ROOT = Path(__file__).resolve().parents[2]
DENY = C.DENY


def facts(tool: str = "x", args: object = None, category: str = "read", level: str = "low",
          grant: str = "alice", server: str = "truenas", via: str = "", session: str = "s1") -> Facts:
    return Facts(grant=grant, server=server, tool=tool, risk_category=category, risk_level=level, arguments=args,
                 via=via, session=session)


def decide(document: dict | None, tool: str = "x", args: object = None, counters: dict | None = None,
           now: float = NOW, **kw: str) -> Decision:
    policy = None if document is None else parse_policy(document)
    return evaluate(facts(tool, args, **kw), policy, counters or {}, now)


def problems_of(document: object) -> list[Problem]:
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(document)
    return info.value.problems


def ids(cases: list[tuple]) -> list[str]:
    return [case[0] for case in cases]


# ------------------------------------------------------------------ rule selection and actions


@pytest.mark.parametrize("case", C.SELECTION_CASES, ids=ids(C.SELECTION_CASES))
def test_it_selects_the_most_specific_rule(case: tuple) -> None:
    _, document, tool, category, level, action, refusal, rule = case
    decision = decide(document, tool, {}, category=category, level=level)
    assert (decision.action, decision.refusal, decision.rule) == (action, refusal, rule)


@pytest.mark.parametrize("case", C.MESSAGE_CASES, ids=ids(C.MESSAGE_CASES))
def test_it_explains_refusals_before_arguments(case: tuple) -> None:
    _, document, tool, args, message = case
    decision = decide(document, tool, args)
    assert decision.message == message
    assert not decision.allowed and decision.reservations == ()


def test_it_allows_with_empty_message_and_reason() -> None:
    decision = decide(SEED, "cloud_backup_run", {})
    assert decision.allowed
    assert (decision.refusal, decision.reason, decision.message, decision.retry_after) == (None, "", "", None)


def test_it_treats_null_arguments_as_an_empty_object() -> None:
    document = doc(tools={"x": {"require": [{"path": "args", "op": "exists", "value": True}]}})
    assert decide(document, "x", None).allowed


def test_it_keeps_reason_as_the_bare_text() -> None:
    decision = decide(doc(on_deny="read-only agent"), "x")
    assert decision.reason == "read-only agent"
    assert decision.message == "denied by policy: read-only agent"


def test_it_approves_only_after_arguments_and_limits_pass() -> None:
    rule = {"action": "approve", "arguments": {"required": ["why"]}, "limits": [limit("c", max=1)]}
    document = doc(tools={"x": rule})
    approved = decide(document, "x", {"why": "backup"})
    assert (approved.action, approved.refusal, approved.allowed) == ("approve", None, False)
    assert [r.counter for r in approved.reservations] == ["c"]
    assert decide(document, "x", {}).refusal == "arguments"
    assert decide(document, "x", {"why": "b"}, {approved.reservations[0].key: 1}).refusal == "limit"


def test_it_refuses_hidden_tools_with_action_hide() -> None:
    decision = decide(doc("allow", hide=["x"]), "x")
    assert (decision.action, decision.refusal, decision.allowed) == ("hide", "hidden", False)


def test_it_never_lets_show_denied_change_evaluate() -> None:
    document = doc(show_denied=True, risk={"destructive": {"action": "deny", "on_deny": "ask"}})
    decision = decide(document, "x", category="destructive")
    assert (decision.refusal, decision.message) == ("policy", "denied by policy: ask")


# ------------------------------------------------------------------ predicates


def _predicate_policy(kind: str, case: tuple) -> dict:
    _, path, op, value, _, _ = case
    return doc(tools={"t": {kind: [{"path": path, "op": op, "value": value}]}})


@pytest.mark.parametrize("case", C.OP_CASES, ids=ids(C.OP_CASES))
def test_it_evaluates_each_op_in_require(case: tuple) -> None:
    expected = case[-1]
    decision = decide(_predicate_policy("require", case), "t", case[4])
    if expected is True:
        assert decision.allowed
    elif expected is False:
        assert (decision.refusal, decision.rule) == ("arguments", "/tools/t/require/0")
        assert decision.message.startswith(f"argument check failed: {case[1]} ")
    else:
        assert (decision.action, decision.refusal, decision.rule) == ("deny", "error", "/tools/t/require/0")
        assert decision.message.startswith("policy error: ") and decision.message.endswith(" at /tools/t/require/0")


@pytest.mark.parametrize("case", C.OP_CASES, ids=ids(C.OP_CASES))
def test_it_evaluates_each_op_in_deny_if(case: tuple) -> None:
    expected = case[-1]
    decision = decide(_predicate_policy("deny_if", case), "t", case[4])
    if expected is False:
        assert decision.allowed
    elif expected is True:
        assert (decision.refusal, decision.rule) == ("arguments", "/tools/t/deny_if/0")
        assert decision.message.startswith(f"denied by policy: {case[1]} ")
    else:  # an error in a deny condition must refuse, not slip through
        assert (decision.action, decision.refusal, decision.rule) == ("deny", "error", "/tools/t/deny_if/0")


@pytest.mark.parametrize("op, value, args, text", [
    ("exists", True, {}, "args.x must exist"),
    ("exists", False, {"x": 1}, "args.x must not exist"),
    ("eq", "a", {}, 'args.x must equal "a"'),
    ("neq", 1, {"x": 1}, "args.x must not equal 1"),
    ("in", ["a", "b"], {"x": "c"}, 'args.x must be one of ["a", "b"]'),
    ("not_in", [1], {"x": 1}, "args.x must not be one of [1]"),
    ("lt", 5, {"x": 5}, "args.x must be less than 5"),
    ("lte", 5, {"x": 6}, "args.x must be at most 5"),
    ("gt", 5, {"x": 5}, "args.x must be greater than 5"),
    ("gte", 5.5, {}, "args.x must be at least 5.5"),
    ("regex", "^/mnt/", {"x": "/etc"}, "args.x must match ^/mnt/"),
    ("contains", "y", {"x": ["z"]}, 'args.x must contain "y"'),
], ids=lambda v: str(v))
def test_it_words_failed_requirements(op: str, value: object, args: dict, text: str) -> None:
    document = doc(tools={"t": {"require": [{"path": "args.x", "op": op, "value": value}]}})
    assert decide(document, "t", args).message == f"argument check failed: {text}"


@pytest.mark.parametrize("op, value, args, text", [
    ("gt", 10000, {"x": 20000}, "args.x gt 10000"),
    ("eq", "everyone@", {"x": "everyone@"}, 'args.x eq "everyone@"'),
    ("in", ["a"], {"x": "a"}, 'args.x in ["a"]'),
    ("regex", "\\.\\.", {"x": "/a/../b"}, "args.x regex \\.\\."),
    ("exists", True, {"x": 1}, "args.x exists"),
    ("exists", False, {}, "args.x is missing"),
], ids=lambda v: str(v))
def test_it_words_deny_if_conditions(op: str, value: object, args: dict, text: str) -> None:
    document = doc(tools={"t": {"deny_if": [{"path": "args.x", "op": op, "value": value}]}})
    assert decide(document, "t", args).message == f"denied by policy: {text}"


def test_it_uses_on_deny_for_deny_if() -> None:
    document = doc(tools={"t": {"on_deny": "too much", "deny_if": [{"path": "args.n", "op": "gt", "value": 1}]}})
    decision = decide(document, "t", {"n": 2})
    assert (decision.message, decision.reason) == ("denied by policy: too much", "too much")


def test_it_requires_all_and_denies_on_any() -> None:
    require = [{"path": "args.a", "op": "exists", "value": True}, {"path": "args.b", "op": "exists", "value": True}]
    deny_if = [{"path": "args.c", "op": "eq", "value": 1}, {"path": "args.d", "op": "eq", "value": 1}]
    document = doc(tools={"t": {"require": require, "deny_if": deny_if}})
    assert decide(document, "t", {"a": 1, "b": 1}).allowed
    assert decide(document, "t", {"a": 1}).rule == "/tools/t/require/1"
    assert decide(document, "t", {"a": 1, "b": 1, "d": 1}).rule == "/tools/t/deny_if/1"
    assert decide(document, "t", {"a": 1, "b": 1, "c": 1, "d": 1}).rule == "/tools/t/deny_if/0"


def test_it_checks_schema_then_require_then_deny_if() -> None:
    rule = {"arguments": {"required": ["s"]}, "require": [{"path": "args.r", "op": "exists", "value": True}],
            "deny_if": [{"path": "args.d", "op": "exists", "value": True}]}
    document = doc(tools={"t": rule})
    assert decide(document, "t", {"d": 1}).rule == "/tools/t/arguments/required/0"
    assert decide(document, "t", {"s": 1, "d": 1}).rule == "/tools/t/require/0"
    assert decide(document, "t", {"s": 1, "r": 1, "d": 1}).rule == "/tools/t/deny_if/0"


def test_it_reports_what_went_wrong_in_an_evaluation_error() -> None:
    document = doc(tools={"pay": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 10000}]}})
    decision = decide(document, "pay", {"amount": "20000"})
    assert decision.message == "policy error: args.amount is not a number (got string) at /tools/pay/deny_if/0"
    assert decision.reason == "args.amount is not a number (got string) at /tools/pay/deny_if/0"


# ------------------------------------------------------------------ argument schema


@pytest.mark.parametrize("case", C.SCHEMA_CASES, ids=ids(C.SCHEMA_CASES))
def test_it_checks_the_argument_schema(case: tuple) -> None:
    _, schema, args, message, pointer = case
    decision = decide(doc(tools={"t": {"arguments": schema}}), "t", args)
    if message is None:
        assert decision.allowed
    else:
        assert (decision.action, decision.refusal) == ("deny", "arguments")
        assert (decision.message, decision.reason) == (message, message)
        assert decision.rule == "/tools/t/arguments" + pointer


def test_it_quotes_odd_argument_names() -> None:
    decision = decide(doc(tools={"t": {"arguments": {"required": ["it's"]}}}), "t", {})
    assert decision.message == "argument \"it's\" is required"


# ------------------------------------------------------------------ limits


def _limited(max_: int = 10, window: object = "minute", scope: str = "grant", default: str = "deny") -> dict:
    return doc(default, tools={"x": {"limits": [limit("c", window, max_, scope)]}})


@pytest.mark.parametrize("max_", [1, 2, 10, 600])
def test_it_exhausts_exactly_at_max(max_: int) -> None:
    key = decide(_limited(max_), "x").reservations[0].key
    assert decide(_limited(max_), "x", {}, {key: max_ - 1}).allowed
    refused = decide(_limited(max_), "x", {}, {key: max_})
    assert (refused.action, refused.refusal, refused.rule) == ("deny", "limit", "/tools/x/limits/0")
    assert refused.reservations == ()
    assert decide(_limited(max_), "x", {}, {key: max_ + 5}).refusal == "limit"


@pytest.mark.parametrize("case", C.RETRY_CASES, ids=ids(C.RETRY_CASES))
def test_it_aligns_windows_and_computes_retry_after(case: tuple) -> None:
    _, window, now, start, retry = case
    seconds = P.NAMED_WINDOWS.get(window, window)
    res = decide(_limited(1, window), "x", now=now).reservations[0]
    assert (res.window, res.window_start, res.window_end) == (seconds, start, start + seconds)
    refused = decide(_limited(1, window), "x", {}, {res.key: 1}, now=now)
    assert refused.retry_after == retry == math.ceil(res.window_end - now)
    words = {"minute": "minute", "hour": "hour", "day": "day"}.get(window, f"{window} s")
    assert refused.message == f"rate limit c exceeded: 1 per {words}, retry in {retry} s"


def test_it_starts_days_at_utc_midnight() -> None:
    now = datetime(2026, 3, 14, 23, 59, 59, tzinfo=UTC).timestamp()
    res = decide(_limited(5, "day"), "x", now=now).reservations[0]
    assert datetime.fromtimestamp(res.window_start, UTC) == datetime(2026, 3, 14, tzinfo=UTC)
    assert decide(_limited(5, "day"), "x", now=now + 1).reservations[0].window_start == res.window_end


def test_it_uses_a_fresh_counter_in_the_next_window() -> None:
    res = decide(_limited(1), "x", now=NOW).reservations[0]
    later = decide(_limited(1), "x", {}, {res.key: 1}, now=res.window_end)
    assert later.allowed and later.reservations[0].key != res.key


@pytest.mark.parametrize("scope, key", [
    ("grant", "c|grant|truenas/alice|60|{start}"),
    ("server", "c|server|truenas|60|{start}"),
    ("global", "c|global|*|60|{start}"),
    ("session", "c|session|truenas/alice/s1|60|{start}"),
])
def test_it_builds_keys_for_each_scope(scope: str, key: str) -> None:
    res = decide(_limited(3, scope=scope), "x").reservations[0]
    start = NOW // 60 * 60
    assert res == Reservation(key.format(start=start), "c", scope, 3, 60, start, start + 60, "/tools/x/limits/0")


def test_it_separates_grants_and_servers_by_scope() -> None:
    def key(scope: str, grant: str, server: str) -> str:
        return decide(_limited(scope=scope), "x", grant=grant, server=server).reservations[0].key
    assert key("grant", "a", "s") != key("grant", "b", "s")
    assert key("server", "a", "s") == key("server", "b", "s") != key("server", "a", "t")
    assert key("global", "a", "s") == key("global", "b", "t")


def test_it_counts_session_limits_per_session_of_each_grant() -> None:
    def key(grant: str, session: str) -> str:
        return decide(_limited(scope="session"), "x", grant=grant, session=session).reservations[0].key
    assert key("a", "s1") != key("a", "s2")
    assert key("a", "s1") != key("b", "s1")
    assert key("a", "s/1") != key("a/s", "1")  # separators escaped: no collision


def test_it_refuses_a_session_limit_without_a_session() -> None:
    decision = decide(_limited(scope="session"), "x", session="")
    assert (decision.action, decision.refusal) == ("deny", "error")
    assert "no agent session" in decision.reason
    assert decide(_limited(scope="grant"), "x", session="").allowed  # other scopes need none


@pytest.mark.parametrize("case", C.VIA_CASES, ids=ids(C.VIA_CASES))
def test_it_governs_a_dispatchers_action_as_the_action(case: tuple) -> None:
    _, document, tool, expected_action, refusal, rule = case
    decision = decide(document, tool, via="truenas", category="execute", level="high")
    assert (decision.action, decision.refusal, decision.rule) == (expected_action, refusal, rule)
    seen = visibility(facts(tool, via="truenas", category="execute", level="high"), parse_policy(document))
    assert seen.allowed == (expected_action in ("allow", "approve"))


def test_it_escapes_separators_in_scope_ids() -> None:
    one = decide(_limited(), "x", grant="b", server="a/x").reservations[0].key
    two = decide(_limited(), "x", grant="x/b", server="a").reservations[0].key
    assert one != two
    assert "a%2Fx/b" in one and "%7C" in decide(_limited(), "x", grant="a|b").reservations[0].key


def test_it_uses_seconds_in_keys_for_numeric_windows() -> None:
    res = decide(_limited(window=900), "x").reservations[0]
    assert res.key == f"c|grant|truenas/alice|900|{NOW // 900 * 900}"
    assert res.window == 900


def test_it_applies_all_tools_limits_with_default_allow() -> None:
    document = doc("allow", all_tools={"limits": [limit("all_calls", max=600)]})
    allowed = decide(document, "anything")
    assert allowed.allowed and allowed.rule == "/default"
    res = allowed.reservations[0]
    assert (res.counter, res.rule) == ("all_calls", "/all_tools/limits/0")
    refused = decide(document, "anything", {}, {res.key: 600})
    assert (refused.refusal, refused.rule) == ("limit", "/all_tools/limits/0")


def test_it_combines_rule_and_all_tools_limits_sorted_by_key() -> None:
    document = doc(all_tools={"limits": [limit("a_all")]}, tools={"x": {"limits": [limit("z_tool"), limit("m")]}})
    keys = [r.key for r in decide(document, "x").reservations]
    assert keys == sorted(keys) and [k.split("|")[0] for k in keys] == ["a_all", "m", "z_tool"]


def test_it_does_not_apply_limits_when_refused_earlier() -> None:
    document = doc(all_tools={"limits": [limit("all")]}, tools={"x": {"arguments": {"required": ["a"]}}})
    assert decide(document, "x").reservations == ()
    assert decide(document, "y").reservations == ()


def test_it_shares_one_counter_and_keeps_the_stricter_max() -> None:
    document = doc(all_tools={"limits": [limit("shared", max=100)]}, tools={"x": {"limits": [limit("shared", max=5)]}})
    reservations = decide(document, "x").reservations
    assert len(reservations) == 1 and reservations[0].max == 5
    assert decide(document, "y", category="read").reservations == ()  # default deny


def test_it_shares_a_counter_across_tools() -> None:
    document = doc(tools={"a": {"limits": [limit("syncs", "day", 2, "server")]},
                          "b": {"limits": [limit("syncs", "day", 2, "server")]}})
    assert decide(document, "a").reservations[0].key == decide(document, "b").reservations[0].key


def test_it_reports_the_longest_wait_when_several_limits_are_exhausted() -> None:
    document = doc(tools={"x": {"limits": [limit("m", "minute", 1), limit("h", "hour", 1), limit("s", 900, 1)]}})
    counters = {r.key: 1 for r in decide(document, "x").reservations}
    refused = decide(document, "x", {}, counters)
    hour_end = (NOW // 3600 + 1) * 3600
    assert (refused.rule, refused.retry_after) == ("/tools/x/limits/1", hour_end - NOW)
    assert refused.message.startswith("rate limit h exceeded: 1 per hour")


def test_it_reports_the_exhausted_limit_even_if_others_are_fine() -> None:
    document = doc(tools={"x": {"limits": [limit("m", "minute", 5), limit("h", "hour", 100)]}})
    minute_key = decide(document, "x").reservations[1].key
    assert minute_key.startswith("m|")
    assert decide(document, "x", {}, {minute_key: 5}).rule == "/tools/x/limits/0"


def test_it_formats_limit_messages() -> None:
    res = Reservation("k", "c", "grant", 10, 60, 120, 180, "/tools/x/limits/0")
    assert limit_message(res, 163) == "rate limit c exceeded: 10 per minute, retry in 17 s"
    assert limit_message(res, 179.01) == "rate limit c exceeded: 10 per minute, retry in 1 s"
    odd = Reservation("k", "c", "grant", 3, 900, 0, 900, "/all_tools/limits/0")
    assert limit_message(odd, 0) == "rate limit c exceeded: 3 per 900 s, retry in 900 s"


def test_it_lists_counter_names() -> None:
    document = doc(all_tools={"limits": [limit("b")]}, tools={"x": {"limits": [limit("a"), limit("b")]}})
    assert parse_policy(document).counter_names() == ("a", "b")


# ------------------------------------------------------------------ errors deny


@pytest.mark.parametrize("bad_facts", [
    Facts("g", "s", None, "read", "low", {}),  # type: ignore[arg-type]
    Facts("g", "s", 5, "read", "low", {}),  # type: ignore[arg-type]
    Facts("g", "s", "x", ["read"], "low", {}),  # type: ignore[arg-type]
    Facts(None, "s", "x", "read", "low", {}),  # type: ignore[arg-type]
], ids=["tool-none", "tool-int", "category-list", "grant-none"])
def test_it_denies_on_broken_facts(bad_facts: Facts) -> None:
    policy = parse_policy(doc("allow", all_tools={"limits": [limit("c")]}, risk={"write": {}}))
    decision = evaluate(bad_facts, policy, {}, NOW)
    assert (decision.action, decision.refusal, decision.allowed) == ("deny", "error", False)
    assert decision.message.startswith("policy error: ")


@pytest.mark.parametrize("counters", [{"k": None}, {"k": "3"}, {"k": float("nan")}], ids=["none", "str", "nan"])
def test_it_denies_on_broken_counter_values(counters: dict) -> None:
    policy = parse_policy(_limited())
    key = evaluate(facts("x", {}), policy, {}, NOW).reservations[0].key
    decision = evaluate(facts("x", {}), policy, {key: counters["k"]}, NOW)
    assert (decision.refusal, decision.rule) == ("error", "/tools/x/limits/0")


@pytest.mark.parametrize("now", [float("nan"), float("inf"), None, "12"], ids=["nan", "inf", "none", "str"])
def test_it_denies_on_a_broken_clock(now: object) -> None:
    decision = evaluate(facts("x", {}), parse_policy(_limited()), {}, now)  # type: ignore[arg-type]
    assert decision.refusal == "error"


def test_it_denies_when_counters_is_not_a_mapping() -> None:
    decision = evaluate(facts("x", {}), parse_policy(_limited()), None, NOW)  # type: ignore[arg-type]
    assert (decision.action, decision.refusal) == ("deny", "error")


def test_it_denies_when_something_unexpected_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("bug")
    monkeypatch.setattr(P, "select_rule", boom)
    decision = decide(doc("allow"), "x")
    assert (decision.action, decision.refusal) == ("deny", "error")
    assert decision.message == "policy error: unexpected RuntimeError at (document)"
    assert visibility(facts("x"), parse_policy(doc("allow"))).refusal == "error"


def _nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[return-value]


@pytest.mark.parametrize("depth", [10, 300, 700])
def test_it_refuses_deeply_nested_arguments_either_way(depth: int) -> None:
    # Comparing deep structures may run out of stack: that must refuse ("error"), never allow.
    document = doc(tools={"t": {"deny_if": [{"path": "args.a", "op": "eq", "value": _nested(depth)}]}})
    decision = decide(document, "t", {"a": _nested(depth)})
    assert not decision.allowed
    assert decision.refusal in (("arguments",) if depth <= 10 else ("arguments", "error"))


# ------------------------------------------------------------------ visibility


@pytest.mark.parametrize("document, tool, category, visible, rule", [
    (doc(), "x", "read", False, "/default"),
    (doc(show_denied=True), "x", "read", True, "/default"),
    (doc("allow"), "x", "read", True, "/default"),
    (doc("allow", hide=["x"], show_denied=True), "x", "read", False, "/hide/0"),
    (doc("allow", tools={"x": {"action": "hide"}}, show_denied=True), "x", "read", False, "/tools/x"),
    (doc("allow", risk={"destructive": DENY}), "x", "destructive", False, "/risk/destructive"),
    (doc("allow", risk={"destructive": DENY}, show_denied=True), "x", "destructive", True, "/risk/destructive"),
    (doc(tools={"x": {"action": "approve"}}), "x", "read", True, "/tools/x"),
    (doc(tools={"x": {"arguments": {"required": ["a"]}, "limits": [limit("c", max=1)]}}), "x", "read", True,
     "/tools/x"),
], ids=["default-deny", "default-deny-shown", "default-allow", "hide-never-shown", "rule-hide-never-shown",
        "deny", "deny-shown", "approve", "arguments-and-limits-ignored"])
def test_it_decides_visibility_from_steps_0_to_3(document: dict, tool: str, category: str, visible: bool,
                                                 rule: str) -> None:
    decision = visibility(facts(tool, {"ignored": 1}, category), parse_policy(document))
    assert (decision.action == "allow" and decision.refusal is None) is visible
    assert decision.rule == rule


def test_it_hides_everything_without_a_policy() -> None:
    assert visibility(facts("x"), None).refusal == "policy"


def test_it_ignores_non_object_arguments_for_visibility() -> None:
    assert visibility(facts("x", [1, 2]), parse_policy(doc("allow"))).allowed


TOOL_NAMES = ["a", "ab", "abc", "b", "ba", "x_1", "X_1", "pool_x"]
GLOBS = ["a*", "a?", "*", "?b*", "[ab]*", "x_*", "pool_*", "*c"]
ARG_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "a", "/mnt/tank/x", "1"]),
                       st.lists(st.integers(0, 2), max_size=2))
ARGS = st.dictionaries(st.sampled_from(["a", "b", "n"]), ARG_VALUES, max_size=3)


@st.composite
def predicates(draw: st.DrawFn) -> dict:
    op = draw(st.sampled_from(P.OPS))
    value = {"in": ["a", 1], "not_in": [True], "lt": 1, "lte": 0, "gt": 2, "gte": -1, "regex": "^a",
             "exists": draw(st.booleans())}.get(op, draw(ARG_VALUES))
    return {"path": draw(st.sampled_from(["args.a", "args.b", "args.n", "args.a.0", "args"])), "op": op,
            "value": value}


@st.composite
def rules(draw: st.DrawFn, key: str) -> dict:
    rule: dict = {}
    action = draw(st.sampled_from([None, *P.ACTIONS]))
    if action not in (None, "allow"):
        rule["action"] = action
    if draw(st.booleans()):
        rule["on_deny"] = draw(st.sampled_from(["no", "ask an operator"]))
    for name in ("require", "deny_if"):
        if items := draw(st.lists(predicates(), max_size=2)):
            rule[name] = items
    if draw(st.booleans()):
        rule["arguments"] = {"properties": {"n": {"type": "integer", "maximum": 2}}}
    if draw(st.booleans()):
        rule["limits"] = [limit(draw(st.sampled_from(["c1", "c2"])), "minute", draw(st.integers(1, 3)),
                                draw(st.sampled_from(P.SCOPES)))]
        if draw(st.booleans()):
            rule["limits"][0]["on_exceed"] = draw(st.sampled_from(["deny", "approve"]))
    return rule


@st.composite
def documents(draw: st.DrawFn) -> dict:
    document = doc(draw(st.sampled_from(P.DEFAULTS)))
    if draw(st.booleans()):
        document["show_denied"] = True
    if draw(st.booleans()):
        document["on_deny"] = "default says no"
    if hide := draw(st.lists(st.sampled_from(TOOL_NAMES + GLOBS), max_size=2, unique=True)):
        document["hide"] = hide
    if draw(st.booleans()):
        document["all_tools"] = {"limits": [limit("c1", "minute", draw(st.integers(1, 3)), "server")]}
    if risk_keys := draw(st.lists(st.sampled_from(P.RISK_KEYS), max_size=3, unique=True)):
        document["risk"] = {k: draw(rules(k)) for k in risk_keys}
    if tool_keys := draw(st.lists(st.sampled_from(TOOL_NAMES + GLOBS), max_size=4, unique=True)):
        document["tools"] = {k: draw(rules(k)) for k in tool_keys}
    return document


def _refused(decision: Decision) -> bool:
    return decision.refusal is not None and decision.action in ("deny", "hide")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents(), tool=st.sampled_from(TOOL_NAMES), category=st.sampled_from([*P.RISK_CATEGORIES, "?"]),
       level=st.sampled_from([*P.RISK_LEVELS, "?"]), arg_sets=st.lists(ARGS, min_size=1, max_size=4),
       used=st.integers(0, 4))
def test_it_agrees_between_visibility_and_evaluate(document: dict, tool: str, category: str, level: str,
                                                   arg_sets: list, used: int) -> None:
    policy = parse_policy(document)
    seen = visibility(facts(tool, None, category, level), policy)
    for args in arg_sets:
        f = facts(tool, args, category, level)
        counters = {r.key: used for r in evaluate(f, policy, {}, NOW).reservations}
        decision = evaluate(f, policy, counters, NOW)
        if decision.refusal is None:
            assert decision.action in ("allow", "approve")
        else:
            assert _refused(decision) and decision.reservations == ()
        if not seen.allowed:
            assert _refused(decision) and decision == seen  # the same refusal, for any arguments
        elif decision.refusal is not None:
            assert decision.refusal in ("arguments", "limit", "error") or (
                decision.refusal == "policy" and policy.show_denied)


@settings(max_examples=300)
@given(document=documents())
def test_it_round_trips_generated_policies(document: dict) -> None:
    policy = parse_policy(document)
    exported = export_policy(policy)
    assert parse_policy(exported) == policy and hash(parse_policy(exported)) == hash(policy)
    assert export_policy(parse_policy(exported)) == exported
    assert canonical_json(export_policy(parse_policy(load_policy_text(canonical_json(exported))))) == \
        canonical_json(exported)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300)
@given(document=documents(), tool=st.sampled_from(TOOL_NAMES), args=JSON_VALUES,
       counters=st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=2))
def test_it_never_raises_and_never_allows_a_non_object(document: dict, tool: str, args: object,
                                                      counters: dict) -> None:
    decision = evaluate(facts(tool, args), parse_policy(document), counters, NOW)
    if args is not None and not isinstance(args, dict):
        assert _refused(decision)


def _field_soup(names: tuple[str, ...], values: st.SearchStrategy) -> st.SearchStrategy:
    return st.dictionaries(st.sampled_from(names + ("bogus",)), values, max_size=4)


FUZZ_LIMIT = _field_soup(P.LIMIT_FIELDS, JSON_VALUES)
FUZZ_PREDICATE = _field_soup(P.PREDICATE_FIELDS, JSON_VALUES | st.sampled_from(P.OPS) | st.just("args.a"))
FUZZ_ARGUMENTS = _field_soup(P.ARGUMENTS_FIELDS, JSON_VALUES | st.dictionaries(
    st.text(max_size=2), _field_soup(P.PROPERTY_FIELDS, JSON_VALUES | st.sampled_from(P.TYPES)), max_size=2))
FUZZ_RULE = _field_soup(
    P.RULE_FIELDS + P.RULE_ALIASES,
    JSON_VALUES | st.sampled_from(P.ACTIONS) | st.lists(FUZZ_LIMIT | FUZZ_PREDICATE, max_size=2) | FUZZ_LIMIT
    | FUZZ_ARGUMENTS,
)
FUZZ_DOC = _field_soup(
    P.TOP_FIELDS,
    JSON_VALUES | st.sampled_from(["1", "allow", "deny"]) | st.dictionaries(
        st.sampled_from([*P.RISK_KEYS, "x", "a*", "limits"]), FUZZ_RULE | st.lists(FUZZ_LIMIT, max_size=2),
        max_size=3),
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(document=FUZZ_DOC)
def test_it_only_ever_raises_policy_invalid_on_any_document(document: dict) -> None:
    try:
        policy = parse_policy(document)
    except PolicyInvalid as err:
        assert err.problems and all(isinstance(p, Problem) for p in err.problems)
        assert str(err).count("\n") == len(err.problems) - 1
    else:
        assert export_policy(parse_policy(export_policy(policy))) == export_policy(policy)


@settings(max_examples=300)
@given(text=st.text(max_size=40) | st.builds(lambda d: canonical_json(d), FUZZ_DOC))
def test_it_only_ever_raises_policy_invalid_on_any_text(text: str) -> None:
    try:
        loaded = load_policy_text(text)
    except PolicyInvalid as err:
        assert err.problems
    else:
        assert isinstance(loaded, dict)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("case", C.VALIDATION_CASES, ids=ids(C.VALIDATION_CASES))
def test_it_rejects_invalid_policies(case: tuple) -> None:
    _, document, pointer, fragment = case
    problems = problems_of(document)
    matching = [p for p in problems if p.pointer == pointer]
    assert matching, f"no problem at {pointer!r}: {problems}"
    assert any(fragment in p.message for p in matching), matching


def test_it_collects_all_problems() -> None:
    pointers = [p.pointer for p in problems_of(C.MULTI_PROBLEM_DOC)]
    assert sorted(pointers) == sorted(C.MULTI_PROBLEM_POINTERS)


def test_it_lists_problems_one_per_line() -> None:
    with pytest.raises(PolicyInvalid) as info:
        parse_policy({"version": "1", "default": "no", "x": 1})
    assert str(info.value).splitlines() == [
        "/x: unknown field 'x' (expected one of: version, default, show_denied, on_deny, hide, all_tools, risk, "
        "tools, resources, prompts)",
        "/default: default must be 'allow' or 'deny'",
    ]


def test_it_rejects_deeply_nested_documents() -> None:
    value: list = []
    for _ in range(100_000):
        value = [value]
    problems = problems_of(doc(tools={"t": {"deny_if": [{"path": "args.x", "op": "eq", "value": value}]}}))
    assert problems


def test_it_accepts_a_counter_reused_with_the_same_window() -> None:
    document = doc(all_tools={"limits": [limit("c", 60)]}, tools={"x": {"limits": [limit("c", "minute", 5)]}})
    assert parse_policy(document).counter_names() == ("c",)


@pytest.mark.parametrize("case", C.TEXT_CASES, ids=ids(C.TEXT_CASES))
def test_it_loads_text_strictly(case: tuple) -> None:
    _, text, pointer, fragment = case
    with pytest.raises(PolicyInvalid) as info:
        load_policy_text(text)
    assert any(p.pointer == pointer and fragment in p.message for p in info.value.problems), info.value.problems


def test_it_loads_valid_text() -> None:
    assert load_policy_text(canonical_json(SEED)) == SEED


def test_it_rejects_text_that_is_not_a_string() -> None:
    with pytest.raises(PolicyInvalid):
        load_policy_text(b"{}")  # type: ignore[arg-type]


# ------------------------------------------------------------------ aliases and round trip


@pytest.mark.parametrize("case", C.ALIAS_CASES, ids=ids(C.ALIAS_CASES))
def test_it_normalises_aliases_and_defaults(case: tuple) -> None:
    _, key, written, canonical = case
    exported = export_policy(parse_policy(doc(tools={key: written})))
    assert exported == doc(tools={key: canonical})
    assert export_policy(parse_policy(exported)) == exported


def test_it_points_alias_limits_at_their_canonical_place() -> None:
    document = doc(tools={"x": {"limits": [limit("a")], "rate_limit": {"max": 1, "window": 60}}})
    policy = parse_policy(document)
    counters = {r.key: 1 for r in evaluate(facts("x", {}), policy, {}, NOW).reservations}
    assert evaluate(facts("x", {}), policy, counters, NOW).rule == "/tools/x/limits/1"


def test_it_round_trips_the_seed_exactly() -> None:
    assert export_policy(parse_policy(SEED)) == SEED
    assert canonical_json(export_policy(parse_policy(SEED))) == canonical_json(SEED)


def test_it_drops_defaults_on_export() -> None:
    written = {"version": "1", "default": "allow", "show_denied": False, "hide": [], "all_tools": {"limits": []},
               "risk": {}, "tools": {}}
    assert export_policy(parse_policy(written)) == doc("allow")


def test_it_keeps_top_level_keys_in_canonical_order() -> None:
    written = {"prompts": {"p": {}}, "resources": {"r://x": {}}, "tools": {"x": {}}, "risk": {"read": {}},
               "all_tools": {"limits": [limit("c")]}, "hide": ["h"], "on_deny": "no", "show_denied": True,
               "default": "deny", "version": "1"}
    assert list(export_policy(parse_policy(written))) == list(P.TOP_FIELDS)


def test_it_compares_and_hashes_policies_by_content() -> None:
    one, two = parse_policy(SEED), parse_policy(load_policy_text(canonical_json(SEED)))
    assert one == two and hash(one) == hash(two) and len({one, two}) == 1
    assert one != parse_policy(doc(tools={"cloud_backup_run": {}}))


def test_it_prints_canonical_json() -> None:
    text = canonical_json({"version": "1", "default": "deny", "on_deny": "ünïcode"})
    assert text == '{\n  "version": "1",\n  "default": "deny",\n  "on_deny": "ünïcode"\n}\n'


def test_it_exports_independent_copies() -> None:
    policy = parse_policy(doc(tools={"x": {"require": [{"path": "args.a", "op": "in", "value": [1]}]}}))
    first = export_policy(policy)
    first["tools"]["x"]["require"][0]["value"].append(2)
    assert export_policy(policy)["tools"]["x"]["require"][0]["value"] == [1]


# ------------------------------------------------------------------ purity and speed


FORBIDDEN_MODULES = {"django", "channels", "mcp", "asyncio", "anyio"}


# The pure engine's modules may import each other, and otherwise only the standard library.
PURE_ENGINE = {"gateway.policy.document"}


@pytest.mark.parametrize("module", ["gateway/policy/engine.py", "gateway/policy/document.py", "gateway/policy/diff.py"])
def test_it_imports_only_the_standard_library(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports are not allowed"
            if node.module not in PURE_ENGINE:
                names.add(node.module.split(".")[0])
    assert names, "expected at least one import"
    assert not names & FORBIDDEN_MODULES
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names - set(sys.stdlib_module_names)



# ------------------------------------------------------------------ on_exceed: approve


@pytest.mark.parametrize("case", C.ESCALATION_CASES, ids=ids(C.ESCALATION_CASES))
def test_a_limit_escalates_or_refuses_as_on_exceed_says(case: tuple) -> None:
    _, rule, used, expected = case
    document = doc(tools={"x": rule})
    keys = {r.counter: r.key for r in decide(document, "x").reservations}
    decision = decide(document, "x", {}, {keys[name]: n for name, n in used.items()})
    action, refusal, pointer, reserved = expected
    assert (decision.action, decision.refusal, decision.rule) == (action, refusal, pointer)
    assert sorted(r.counter for r in decision.reservations) == reserved
    if action == "approve" and pointer.startswith("/tools/x/limits/"):
        assert decision.message.startswith("rate limit ") and "waits for a person's approval" in decision.message


def test_on_exceed_round_trips_and_is_written_only_when_it_escalates() -> None:
    document = doc(tools={"x": {"limits": [dict(limit("a"), on_exceed="approve"), dict(limit("b"), on_exceed="deny")]}})
    exported = export_policy(parse_policy(document))
    assert exported["tools"]["x"]["limits"] == [dict(limit("a"), on_exceed="approve"), limit("b")]
    assert export_policy(parse_policy(exported)) == exported
