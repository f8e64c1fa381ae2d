"""The policy's read rules (`resources`, `prompts`): decide_read as cases-as-data, validation, and the round trip."""

from __future__ import annotations

import pytest

from gateway.policy import PolicyInvalid, decide_read, export_policy, parse_policy

RULES = {"version": "1", "default": "deny",
         "resources": {"truenas://pools": {}, "truenas://jobs*": {}, "truenas://*": {"action": "deny"},
                       "truenas://users": {"action": "deny", "on_deny": "user records are not for agents"}},
         "prompts": {"simple-*": {}, "simple-secret": {"action": "deny"}}}

CASES = [
    # (policy, kind, name) -> (allowed, rule, message contains)
    (RULES, "resources", "truenas://pools", True, "/resources/truenas:~1~1pools", ""),
    (RULES, "resources", "truenas://jobs/{id}", True, "/resources/truenas:~1~1jobs*", ""),
    (RULES, "resources", "truenas://users", False, "/resources/truenas:~1~1users", "user records are not for agents"),
    (RULES, "resources", "truenas://alerts", False, "/resources/truenas:~1~1*", "denied by policy: resource"),
    (RULES, "resources", "file:///etc/passwd", False, "/default", "not allowed by /resources"),
    (RULES, "prompts", "simple-prompt", True, "/prompts/simple-*", ""),
    (RULES, "prompts", "simple-secret", False, "/prompts/simple-secret", "denied by policy: prompt"),
    (RULES, "prompts", "complex", False, "/default", "not allowed by /prompts"),
    ({"version": "1", "default": "allow"}, "resources", "any://thing", True, "/default", ""),
    ({"version": "1", "default": "allow", "hide": ["*"]}, "resources", "any://thing", False, "/hide",
     "hides everything"),
    ({"version": "1", "default": "allow", "hide": ["*"], "prompts": {"p": {}}}, "prompts", "p", False, "/hide", ""),
    ({"version": "1", "default": "deny", "on_deny": "maintenance"}, "prompts", "p", False, "/default", "maintenance"),
    ({"version": "1", "default": "allow", "hide": ["secret_*"]}, "resources", "x://y", True, "/default", ""),
]


@pytest.mark.parametrize(("doc", "kind", "name", "allowed", "rule", "message"), CASES)
def test_a_read_is_decided_by_its_rule_else_the_default(doc, kind, name, allowed, rule, message):
    decision = decide_read(kind, name, parse_policy(doc))
    assert (decision.allowed, decision.rule) == (allowed, rule)
    assert message in decision.message


def test_no_policy_refuses_every_read():
    assert not decide_read("resources", "x://y", None).allowed


def test_read_rules_round_trip_in_canonical_form():
    assert export_policy(parse_policy(RULES)) == RULES
    allow_spelled_out = {**RULES, "prompts": {"simple-*": {"action": "allow"}}}
    assert export_policy(parse_policy(allow_spelled_out))["prompts"] == {"simple-*": {}}


@pytest.mark.parametrize(("section", "pointer", "message"), [
    ({"resources": []}, "/resources", "must be an object"),
    ({"resources": {"x://y": {"action": "approve"}}}, "/resources/x:~1~1y/action", "never held"),
    ({"prompts": {"p": {"limits": []}}}, "/prompts/p/limits", "unknown field"),
    ({"prompts": {"p": "allow"}}, "/prompts/p", "must be an object"),
    ({"prompts": {"": {}}}, "/prompts/", "must not be empty"),
    ({"resources": {"x://y": {"on_deny": ""}}}, "/resources/x:~1~1y/on_deny", "non-empty string"),
])
def test_bad_read_rules_are_reported_at_their_pointer(section, pointer, message):
    with pytest.raises(PolicyInvalid) as info:
        parse_policy({"version": "1", "default": "deny", **section})
    assert any(p.pointer == pointer and message in p.message for p in info.value.problems), info.value


def test_a_change_to_read_rules_is_summarised():
    from gateway.policy.diff import summarize

    before = {"version": "1", "default": "deny", "resources": {"a://b": {}}}
    after = {"version": "1", "default": "deny", "resources": {"a://b": {"action": "deny"}}, "prompts": {"p": {}}}
    assert summarize(before, after) == ["~ resources/a://b: action allow → deny", "+ prompts/p"]
