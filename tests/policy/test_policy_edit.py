"""The builder's pure core (gateway/policy/editing.py: actions come from the engine; edits stay canonical) and its
forms (dashboard/policy_forms.py: fields read into rules and back)."""

from __future__ import annotations

import pytest

from dashboard.policy_forms import (
    common_properties,
    field_for_pointer,
    form_initial,
    glob_rule_from_form,
    rule_from_form,
    schema_properties,
    top_level_field,
    top_level_from_form,
)
from gateway.policy import Facts, PolicyInvalid, evaluate, parse_policy
from gateway.policy.editing import (
    ToolFacts,
    effective_actions,
    glob_reach,
    hides_everything,
    is_glob,
    limit_tools,
    normalize,
    set_actions,
    set_glob_rule,
    set_tool_rule,
    set_top_level,
    text_diff,
    tools_hidden_by,
    tools_matched,
    top_level_of,
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


# ---------------------------------------------------------------- glob rules

CATALOGUE = [ToolFacts("dataset_list", "read", "low"), ToolFacts("dataset_delete", "destructive", "critical"),
             ToolFacts("dataset_lock", "write", "medium"), ToolFacts("Dataset_odd", "read", "low"),
             ToolFacts("pool_list", "read", "low"), ToolFacts("system_reboot", "destructive", "high")]


@pytest.mark.parametrize(("key", "glob"), [
    ("dataset_*", True), ("pool_?ist", True), ("[ds]*", True), ("dataset_list", False), ("a]b", False),
], ids=["star", "question", "set", "exact", "bracket-alone"])
def test_it_asks_the_engine_whether_a_key_is_a_glob(key, glob):
    assert is_glob(key) is glob
    policy = parse_policy({"version": "1", "default": "deny", "tools": {key: {"action": "approve"}}})
    assert bool(policy.index.globs) is glob


def test_it_matches_tools_exactly_as_select_rule_does_case_sensitively():
    assert tools_matched("dataset_*", CATALOGUE) == ["dataset_list", "dataset_delete", "dataset_lock"]
    assert tools_matched("[dp]*_l?st", CATALOGUE) == ["dataset_list", "pool_list"]
    assert tools_matched("nothing_*", CATALOGUE) == []
    assert tools_hidden_by("system_*", CATALOGUE) == ["system_reboot"]
    assert tools_hidden_by("pool_list", CATALOGUE) == ["pool_list"]


def test_it_tells_which_matched_tools_a_glob_decides_and_what_decides_the_others():
    doc = normalize({"version": "1", "default": "deny", "hide": ["dataset_lock"], "tools": {
        "dataset_*": {"limits": [{"counter": "ds", "window": "minute", "max": 20, "scope": "grant"}]},
        "dataset_del*": {"action": "approve"}, "pool_list": {}, "nothing_*": {"action": "deny"}}})
    reach = {r.key: r for r in glob_reach(doc, CATALOGUE)}
    assert list(reach) == ["dataset_*", "dataset_del*", "nothing_*"]
    wide = reach["dataset_*"]
    assert wide.matches == ("dataset_list", "dataset_delete", "dataset_lock")
    assert wide.decides == ("dataset_list",)
    assert wide.elsewhere == (("dataset_delete", "/tools/dataset_del*"), ("dataset_lock", "/hide/0"))
    assert wide.limits == ("20 per minute per grant (ds)",) and wide.action == "allow"
    assert reach["dataset_del*"].decides == ("dataset_delete",) and reach["dataset_del*"].action == "approve"
    assert reach["nothing_*"].matches == ()
    for name in wide.decides:  # what the builder says is what evaluate() does
        facts = next(t for t in CATALOGUE if t.name == name)
        decision = evaluate(Facts("g", "s", name, facts.category, facts.level, {}), parse_policy(doc), {}, 0.0)
        assert decision.rule == "/tools/dataset_*"


def test_it_creates_renames_in_place_and_removes_a_glob_rule():
    doc = normalize({"version": "1", "default": "deny", "tools": {"a": {}, "b_*": {"action": "deny"}, "c": {}}})
    created = set_glob_rule(doc, "dataset_*", {"limits": [{"counter": "dataset___rate", "window": 60, "max": 20}]})
    assert list(created["tools"]) == ["a", "b_*", "c", "dataset_*"]
    assert created["tools"]["dataset_*"]["limits"][0] == {"counter": "dataset___rate", "window": "minute",
                                                          "max": 20, "scope": "grant"}
    renamed = set_glob_rule(created, "bb_*", {"action": "hide"}, old_key="b_*")
    assert list(renamed["tools"]) == ["a", "bb_*", "c", "dataset_*"] and renamed["tools"]["bb_*"] == {"action": "hide"}
    assert "bb_*" not in set_tool_rule(renamed, "bb_*", None)["tools"]


@pytest.mark.parametrize(("key", "old_key", "pointer", "message"), [
    ("dataset_list", None, "key", "names one tool"),
    ("", None, "key", "write a pattern"),
    ("b_*", None, "key", "there is a rule for b_* already"),
    ("b_*", "d_*", "key", "there is a rule for b_* already"),
], ids=["exact-name", "empty", "duplicate", "rename-onto-another"])
def test_it_refuses_a_glob_key_and_names_the_key_field(key, old_key, pointer, message):
    doc = normalize({"version": "1", "default": "deny", "tools": {"b_*": {}, "d_*": {}}})
    with pytest.raises(PolicyInvalid) as caught:
        set_glob_rule(doc, key, {}, old_key=old_key)
    [problem] = caught.value.problems
    assert problem.pointer == pointer and message in problem.message


def test_it_reports_a_bad_glob_rule_at_its_pointer_for_the_editor():
    doc = normalize(POLICY)
    with pytest.raises(PolicyInvalid) as caught:
        set_glob_rule(doc, "ds_*", {"limits": [{"counter": "c", "window": "fortnight", "max": 1}]})
    pointers = [p.pointer for p in caught.value.problems]
    assert pointers == ["/tools/ds_*/limits/0/window"]
    assert field_for_pointer(pointers[0], "ds_*", []) == "limit-0-window"


def test_a_glob_rule_always_does_something_delete_removes_it():
    rule, problems = glob_rule_from_form({"action": ["inherit"]}, [], None, "x_*")
    assert rule is None and problems[0].pointer == "action" and "Delete removes" in problems[0].message
    rule, problems = glob_rule_from_form({"action": ["deny"], "on_deny": ["no"]}, [], None, "x_*")
    assert (rule, problems) == ({"action": "deny", "on_deny": "no"}, [])


def test_it_offers_the_arguments_every_matched_tool_has():
    schemas = [{"properties": {"id": {"type": "string"}, "mode": {"type": "string", "enum": ["a", "b"]},
                               "n": {"type": "integer"}, "only_here": {}}},
               {"properties": {"n": {"type": "number"}, "mode": {"type": "string", "enum": ["a", "b"]},
                               "id": {"type": "string"}}},
               {"properties": {"id": {"type": "string"}, "mode": {"type": "string", "enum": ["a"]},
                               "n": {"type": "integer"}}}]
    props = common_properties(schemas)
    assert [(p.index, p.name, p.type, p.enum) for p in props] == [
        (0, "id", "string", ()), (1, "mode", "string", ()), (2, "n", "mixed", ())]
    assert common_properties([]) == [] and common_properties([{}, SCHEMA]) == []


# ---------------------------------------------------------------- policy-wide fields


def test_it_reads_and_writes_the_policy_wide_fields_from_the_form():
    data = {"show_denied": ["on"], "on_deny": [" ask an operator "], "hide-0": ["system_*"], "hide-1": [""],
            "hide-2": ["pool_export"], "limit-0-counter": [""], "limit-0-max": ["600"], "limit-0-window": ["minute"],
            "limit-0-scope": ["grant"], "limit-1-counter": [""], "limit-1-max": [""]}
    fields, problems = top_level_from_form(data)
    assert problems == [] and fields.hide_rows == (0, 2) and fields.limit_rows == (0,)
    doc = set_top_level(normalize(POLICY), fields)
    assert list(doc)[:6] == ["version", "default", "show_denied", "on_deny", "hide", "all_tools"]
    assert doc["on_deny"] == "ask an operator" and doc["hide"] == ["system_*", "pool_export"]
    assert doc["all_tools"] == {"limits": [{"counter": "all_calls", "window": "minute", "max": 600,
                                            "scope": "grant"}]}
    assert top_level_of(doc).hide == ("system_*", "pool_export")
    cleared = set_top_level(doc, top_level_from_form({})[0])
    assert [k for k in ("show_denied", "on_deny", "hide", "all_tools") if k in cleared] == []
    assert cleared["tools"] == doc["tools"] and cleared["risk"] == doc["risk"]


@pytest.mark.parametrize(("data", "pointer", "field"), [
    ({"hide-0": ["a"], "hide-1": [""], "hide-2": ["a"]}, "/hide/1", "hide-2"),
    ({"limit-0-counter": ["c"], "limit-0-max": ["0"], "limit-0-window": ["minute"]}, "/all_tools/limits/0/max",
     "limit-0-max"),
    ({"limit-0-counter": ["c"], "limit-0-max": ["5"], "limit-0-window": ["fortnight"]},
     "/all_tools/limits/0/window", "limit-0-window"),
], ids=["duplicate-hide-after-a-blank-row", "max-zero", "bad-window"])
def test_it_puts_a_policy_wide_problem_next_to_the_row_it_came_from(data, pointer, field):
    fields, problems = top_level_from_form(data)
    with pytest.raises(PolicyInvalid) as caught:
        set_top_level(normalize(POLICY), fields)
    assert pointer in [p.pointer for p in caught.value.problems]
    assert top_level_field(pointer, fields) == field
    assert top_level_field("/tools/x/action", fields) == ""


def test_it_says_when_hide_leaves_agents_no_tool_at_all():
    assert hides_everything(normalize({**POLICY, "hide": ["x", "*"]}))
    assert not hides_everything(normalize(POLICY))
    assert tools_hidden_by("*", CATALOGUE) == [t.name for t in CATALOGUE]
