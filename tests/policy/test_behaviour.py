"""The preview's diff in behaviour (issue 15): what calls of each tool get before and after, grouped."""

from __future__ import annotations

import pytest

from gateway.policy import parse_policy
from gateway.policy.behaviour import behaviour_changes
from gateway.policy.editing import ToolFacts
from tests.policy.policy_cases import SEED

TOOLS = [ToolFacts("cloud_backup_run", "execute", "high"), ToolFacts("pool_list", "read", "low"),
         ToolFacts("disk_wipe", "destructive", "critical"), ToolFacts("dataset_delete", "destructive", "critical"),
         ToolFacts("pool_export", "destructive", "critical")]
BASE = {**SEED, "risk": {"read": {}, "destructive": {"action": "deny"}}}


def lim(n: int) -> dict:
    return {"limits": [{"counter": "cloud_backup_run_rate", "window": "minute", "max": n, "scope": "grant"}]}


CASES = [
    ("nothing", BASE, []),
    ("tighter-limit", {**BASE, "tools": {"cloud_backup_run": lim(5)}},
     ["cloud_backup_run: limited 10 per minute per grant → limited 5 per minute per grant"]),
    ("deny-to-hide", {**BASE, "risk": {"read": {}, "destructive": {"action": "hide"}}},
     ["3 destructive tools: deny → hide (disk_wipe, dataset_delete, pool_export)"]),
    ("approve-backups", {**BASE, "tools": {"cloud_backup_run": {"action": "approve", **lim(10)}}},
     ["cloud_backup_run: limited 10 per minute per grant → needs approval, limited 10 per minute per grant"]),
    ("argument-check", {**BASE, "tools": {**BASE["tools"], "pool_list": {
        "require": [{"path": "args.name", "op": "exists", "value": True}]}}},
     ["pool_list: allow → allow, arguments checked"]),
    ("reason-only", {**BASE, "risk": {"read": {}, "destructive": {"action": "deny", "on_deny": "ask Bob"}}},
     ["3 destructive tools: deny → deny (the reason agents read changes) (disk_wipe, dataset_delete, pool_export)"]),
    ("mixed-groups", {**BASE, "default": "allow", "risk": {"read": {"action": "deny"}}},
     ["3 destructive tools: deny → allow (disk_wipe, dataset_delete, pool_export)", "pool_list: allow → deny"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_it_says_what_changes_for_calls(case):
    _, draft, expected = case
    assert behaviour_changes(parse_policy(BASE), parse_policy(draft), TOOLS, "truenas") == expected


def test_no_policy_before_means_every_tool_changes():
    assert behaviour_changes(None, parse_policy(BASE), TOOLS, "truenas") == [
        "3 destructive tools: deny → deny (the reason agents read changes) (disk_wipe, dataset_delete, pool_export)",
        "pool_list: deny → allow", "cloud_backup_run: deny → limited 10 per minute per grant"]
