"""Bulk actions planned before they are made (gateway/policy/editing.py plan_actions / plan_limits): the fewest
rules, the refusal text agents read kept or replaced on purpose, and per tool what an agent would notice."""

from __future__ import annotations

import pytest

from gateway.policy import Facts, evaluate, parse_policy
from gateway.policy.editing import ToolFacts, normalize, plan_actions, plan_limits

TOOLS = [
    ToolFacts("pool_list", "read", "low"),
    ToolFacts("disk_list", "read", "low"),
    ToolFacts("dataset_delete", "destructive", "high"),
    ToolFacts("pool_destroy", "destructive", "critical"),
    ToolFacts("service_restart", "execute", "medium"),
]
TIER_REASON = "destructive tools are disabled; ask an operator"
POLICY = normalize({
    "version": "1", "default": "deny",
    "risk": {"read": {}, "destructive": {"action": "deny", "on_deny": TIER_REASON}},
    "tools": {"service_restart": {"action": "approve"}, "pool_destroy": {}},
})


def reason(document: dict, name: str) -> str:
    tool = next(t for t in TOOLS if t.name == name)
    return evaluate(Facts("g", "s", name, tool.category, tool.level, {}), parse_policy(document), {}, 0).reason


# (names, choice, reason) -> (tools whose rule is in the new document, changed for agents, unchanged)
CASES = [
    pytest.param(["dataset_delete"], "deny", "", {"service_restart", "pool_destroy"}, set(), {"dataset_delete"},
                 id="already-denied-by-its-tier-nothing-written"),
    pytest.param(["pool_destroy"], "deny", "", {"service_restart"}, {"pool_destroy"}, set(),
                 id="an-action-only-rule-gives-way-to-the-tier-and-its-reason"),
    pytest.param(["dataset_delete", "pool_destroy"], "deny", "", {"service_restart"}, {"pool_destroy"},
                 {"dataset_delete"}, id="mixed-selection-one-rule-removed-none-written"),
    pytest.param(["pool_list"], "deny", "", {"service_restart", "pool_destroy", "pool_list"}, {"pool_list"}, set(),
                 id="an-allowed-read-tool-needs-its-own-rule"),
    pytest.param(["pool_list", "disk_list"], "allow", "", {"service_restart", "pool_destroy"}, set(),
                 {"pool_list", "disk_list"}, id="already-allowed"),
    pytest.param(["service_restart"], "inherit", "", {"pool_destroy"}, {"service_restart"}, set(),
                 id="inherit-removes-the-rule"),
    pytest.param(["dataset_delete"], "deny", "not on Fridays", {"service_restart", "pool_destroy", "dataset_delete"},
                 {"dataset_delete"}, set(), id="a-new-reason-is-a-change-agents-see"),
    pytest.param(["dataset_delete"], "deny", TIER_REASON, {"service_restart", "pool_destroy"}, set(),
                 {"dataset_delete"}, id="the-same-reason-is-no-change"),
]


@pytest.mark.parametrize("names,choice,given,ruled,changed,unchanged", CASES)
def test_it_writes_the_fewest_rules_and_says_what_agents_notice(names, choice, given, ruled, changed, unchanged):
    plan = plan_actions(POLICY, TOOLS, names, choice, given)
    assert set(plan.document.get("tools", {})) == ruled
    assert {c.name for c in plan.changed} == changed
    assert set(plan.unchanged) == unchanged
    for name in names:  # the engine itself agrees with the plan
        if choice == "deny" and name != "pool_list":
            assert reason(plan.document, name) == (given or TIER_REASON)


def test_a_denied_tool_keeps_the_tiers_reason_unless_another_is_given():
    plan = plan_actions(POLICY, TOOLS, ["pool_destroy"], "deny")
    assert reason(plan.document, "pool_destroy") == TIER_REASON
    plan = plan_actions(POLICY, TOOLS, ["pool_list"], "deny", "reads are paused")
    assert plan.document["tools"]["pool_list"] == {"action": "deny", "on_deny": "reads are paused"}
    assert reason(plan.document, "pool_list") == "reads are paused"


def test_it_groups_what_changes_by_before_and_after():
    plan = plan_actions(POLICY, TOOLS, ["pool_list", "disk_list", "pool_destroy", "dataset_delete"], "deny")
    assert plan.groups() == [("allow", "deny", ["pool_list", "disk_list", "pool_destroy"])]
    assert plan.unchanged == ("dataset_delete",)
    assert (plan.rules_written, plan.rules_removed) == (2, 1)


def test_a_rule_holding_more_than_an_action_is_kept_and_changed_not_removed():
    document = dict(POLICY, tools={"pool_destroy": {"deny_if": [
        {"path": "args.force", "op": "eq", "value": True}]}})
    plan = plan_actions(document, TOOLS, ["pool_destroy"], "deny")
    assert plan.document["tools"]["pool_destroy"]["action"] == "deny"
    assert "deny_if" in plan.document["tools"]["pool_destroy"]


def test_tools_not_in_the_catalogue_are_ignored():
    plan = plan_actions(POLICY, TOOLS, ["no_such_tool"], "deny")
    assert plan.document == POLICY and not plan.changed and not plan.unchanged


def test_limits_are_planned_the_same_way():
    plan = plan_limits(POLICY, TOOLS, ["pool_list"], 5, "minute", "grant")
    assert [c.after.action for c in plan.changed] == ["limited"]
    assert plan.document["tools"]["pool_list"]["limits"][0]["max"] == 5
