"""gateway.policy_edit, the builder's pure core: actions come from the engine; edits stay canonical."""

from __future__ import annotations

import pytest

from gateway.policy import Facts, evaluate, parse_policy
from gateway.policy_edit import (
    ToolFacts,
    effective_actions,
    field_for_pointer,
    form_initial,
    limit_tools,
    normalize,
    rule_from_form,
    schema_properties,
    set_actions,
    text_diff,
)

POLICY = {
    "version": "1", "default": "deny", "show_denied": True, "hide": ["secret_*"],
    "risk": {"read": {}, "write": {"limits": [{"counter": "w", "window": "minute", "max": 3, "scope": "grant"}]},
             "execute": {"action": "approve"}},
    "tools": {"dataset_delete": {"action": "deny"}, "pool_*": {"action": "hide"}},
}
TOOLS = [ToolFacts("disk_list", "read", "low"), ToolFacts("user_update", "write", "medium"),
         ToolFacts("service_restart", "execute", "high"), ToolFacts("dataset_delete", "destructive", "critical"),
         ToolFacts("pool_list", "read", "low"), ToolFacts("secret_get", "read", "medium"),
         ToolFacts("wallet_pay", "financial", "critical")]


def test_it_reports_each_tools_action_as_the_engine_decides_it():
    policy = parse_policy(POLICY)
    actions = effective_actions(policy, TOOLS, "s", "g")
    assert {n: (e.action, e.rule) for n, e in actions.items()} == {
        "disk_list": ("allow", "/risk/read"), "user_update": ("limited", "/risk/write"),
        "service_restart": ("approve", "/risk/execute"), "dataset_delete": ("deny", "/tools/dataset_delete"),
        "pool_list": ("hide", "/tools/pool_*"), "secret_get": ("hide", "/hide/0"),
        "wallet_pay": ("deny", "/default")}
    for tool in TOOLS:  # what evaluate() does with a plain call agrees
        decision = evaluate(Facts("g", "s", tool.name, tool.category, tool.level, {}), policy, {}, 0.0)
        expected = {"limited": "allow"}.get(actions[tool.name].action, actions[tool.name].action)
        assert decision.action == expected


def test_it_keeps_limits_and_checks_when_an_action_changes_and_inherits_on_request():
    doc = normalize({**POLICY, "tools": {"x": {"limits": [{"counter": "c", "window": 60, "max": 1}]}}})
    denied = set_actions(doc, ["x"], "deny")
    assert denied["tools"]["x"] == {"action": "deny", "limits": [{"counter": "c", "window": "minute", "max": 1,
                                                                  "scope": "grant"}]}
    assert "x" not in set_actions(denied, ["x"], "inherit").get("tools", {})


def test_it_limits_many_tools_sharing_one_counter_when_named():
    doc = limit_tools(normalize(POLICY), ["a", "b"], 30, "minute", "grant", "writes")
    assert doc["tools"]["a"]["limits"] == doc["tools"]["b"]["limits"] == [
        {"counter": "writes", "window": "minute", "max": 30, "scope": "grant"}]


SCHEMA = {"type": "object", "properties": {"mode": {"type": "string", "enum": ["fast", "safe"]},
                                           "path": {"type": "string"}, "n": {"type": "integer"},
                                           "force": {"type": "boolean"}}}


def test_it_generates_argument_constraints_from_the_schema_and_back():
    props = schema_properties(SCHEMA)
    data = {"action": ["allow"], "arg-0-enum": ["safe"], "arg-1-pattern": ["^/mnt/"], "arg-1-presence": ["required"],
            "arg-2-minimum": ["1"], "arg-2-maximum": ["2.5"], "arg-3-const": ["false"], "limit-0-max": ["4"],
            "limit-0-window": ["hour"], "limit-0-counter": [""], "limit-0-scope": ["server"]}
    rule, problems = rule_from_form(data, props, None, "t")
    assert problems == []
    assert rule == {"arguments": {"properties": {"mode": {"enum": ["safe"]}, "path": {"pattern": "^/mnt/"},
                                                 "n": {"minimum": 1, "maximum": 2.5}, "force": {"const": False}},
                                  "required": ["path"]},
                    "limits": [{"counter": "t_rate", "window": "hour", "max": 4, "scope": "server"}]}
    initial = form_initial(normalize({"version": "1", "default": "deny", "tools": {"t": rule}})["tools"]["t"], props)
    assert initial["arg-0-enum"] == ["safe"] and initial["arg-1-presence"] == "required"
    assert initial["arg-2-maximum"] == "2.5" and initial["arg-3-const"] == "false"


@pytest.mark.parametrize(("pointer", "field"), [
    ("/tools/t/limits/0/max", "limit-0-max"),
    ("/tools/t/arguments/properties/path/pattern", "arg-1-pattern"),
    ("/tools/t/arguments/properties/mode/enum", "arg-0-values"),
    ("/tools/t/deny_if/0/op", "conditions"),
    ("/tools/t/reason", "on_deny"),
    ("/tools/other/action", ""),
], ids=["limit", "pattern", "enum", "condition", "reason", "other-tool"])
def test_it_maps_a_problem_pointer_to_the_editor_field(pointer, field):
    assert field_for_pointer(pointer, "t", schema_properties(SCHEMA)) == field


def test_it_diffs_the_exported_text_of_two_documents():
    lines = text_diff(normalize(POLICY), normalize({**POLICY, "default": "allow"}))
    assert [line.text for line in lines if line.kind in ("add", "del")] == [
        '-  "default": "deny",', '+  "default": "allow",']
