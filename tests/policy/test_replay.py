"""Replay of a fixed audit log against fixed drafts (issue 15, part 2): exact counts, tables as data. The engine
decides every call; counters are simulated over the calls' own timestamps; a decision that depends on a value the
log redacted or cut is "unknown"."""

from __future__ import annotations

import pytest

from gateway.policy import parse_policy
from gateway.policy.replay import Recorded, needs_arguments, replay
from tests.policy.policy_cases import SEED

T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC, a minute boundary


def call(i: int, tool: str, at: float, grant: str = "1", category: str = "read", level: str = "low",
         arguments: object = None) -> Recorded:
    return Recorded(i, grant, tool, category, level, at, arguments)


# Fifteen backups by grant 1 in one minute, five by grant 2; reads; one delete; one dataset_create whose name the
# log kept, one whose name it redacted, one whose arguments it cut.
LOG = (
    [call(i, "cloud_backup_run", T0 + i, category="execute", level="high") for i in range(15)]
    + [call(100 + i, "cloud_backup_run", T0 + i, grant="2", category="execute", level="high") for i in range(5)]
    + [call(200 + i, "pool_list", T0 + 20 + i) for i in range(4)]
    + [call(300, "dataset_delete", T0 + 30, category="destructive", level="critical")]
    + [call(400, "dataset_create", T0 + 40, category="write", level="medium", arguments={"name": "tank/agents/x"}),
       call(401, "dataset_create", T0 + 41, category="write", level="medium", arguments={"name": "[REDACTED]"}),
       call(402, "dataset_create", T0 + 42, category="write", level="medium",
            arguments={"_truncated": {"bytes": 99999, "sha256": "0" * 64, "prefix": "{"}})]
)
LOG.sort(key=lambda c: c.at)

BASE = {**SEED, "risk": {"read": {}, "write": {}}}
CASES = [
    # (id, draft, calls replayed, changed, {(before, after): n}, unknown)
    ("same-policy", BASE, 28, 0, {}, 0),
    ("tighter-limit", {**BASE, "tools": {"cloud_backup_run": {"limits": [
        {"counter": "cloud_backup_run_rate", "window": "minute", "max": 5, "scope": "grant"}]}}},
     28, 5, {("allow", "limit"): 5}, 0),
    ("limit-per-server", {**BASE, "tools": {"cloud_backup_run": {"limits": [
        {"counter": "cloud_backup_run_rate", "window": "minute", "max": 10, "scope": "server"}]}}},
     28, 5, {("allow", "limit"): 5}, 0),
    ("no-limit", {**BASE, "tools": {"cloud_backup_run": {}}}, 28, 5, {("limit", "allow"): 5}, 0),
    ("deny-reads", {**BASE, "risk": {"write": {}}}, 28, 4, {("allow", "deny"): 4}, 0),
    ("hide-reads", {**BASE, "hide": ["pool_*"]}, 28, 4, {("allow", "deny"): 4}, 0),
    ("approve-backups", {**BASE, "tools": {"cloud_backup_run": {"action": "approve"}}}, 28, 20,
     {("allow", "approve"): 15, ("limit", "approve"): 5}, 0),
    ("allow-deletes", {**BASE, "risk": {**BASE["risk"], "destructive": {}}}, 28, 1, {("deny", "allow"): 1}, 0),
    ("check-dataset-names", {**BASE, "tools": {**BASE["tools"], "dataset_create": {
        "require": [{"path": "args.name", "op": "regex", "value": "^tank/agents/"}]}}},
     28, 2, {("allow", "unknown"): 2}, 2),
    ("deny-dataset-names", {**BASE, "tools": {**BASE["tools"], "dataset_create": {
        "deny_if": [{"path": "args.name", "op": "eq", "value": "tank/agents/x"}]}}},
     28, 3, {("allow", "deny"): 1, ("allow", "unknown"): 2}, 2),
    ("schema-on-names", {**BASE, "tools": {**BASE["tools"], "dataset_create": {
        "arguments": {"properties": {"name": {"type": "string", "maxLength": 3}}}}}},
     28, 3, {("allow", "deny"): 1, ("allow", "unknown"): 2}, 2),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_it_replays_the_log_against_a_draft(case):
    _, draft, calls, changed, pairs, unknown = case
    result = replay(LOG, parse_policy(BASE), parse_policy(draft), "truenas")
    assert (result.calls, result.changed, dict(result.pairs), result.unknown) == (calls, changed, pairs, unknown)
    assert len(result.shown) == changed


def test_the_seed_policy_limits_the_eleventh_backup_of_each_minute_per_grant():
    result = replay(LOG, parse_policy(BASE), parse_policy(BASE), "truenas")
    assert (result.before["limit"], result.before["allow"], result.before["deny"]) == (5, 22, 1)
    unlimited = parse_policy({**BASE, "tools": {"cloud_backup_run": {}}})
    changes = replay(LOG, parse_policy(BASE), unlimited, "truenas").shown
    assert [c.call_id for c in changes] == [10, 11, 12, 13, 14]  # grant 1's 11th to 15th: the draft lets them run


def test_counters_start_again_in_the_next_window():
    later = [call(i, "cloud_backup_run", T0 + 60 * i, category="execute") for i in range(20)]  # one a minute
    assert replay(later, parse_policy(BASE), parse_policy(BASE), "truenas").before["limit"] == 0


def test_no_policy_denies_everything_and_says_so():
    result = replay(LOG, None, parse_policy(BASE), "truenas")
    assert result.pairs[("deny", "allow")] == 22 and result.lines()[0].startswith("28 recorded calls replayed")


def test_it_reads_arguments_only_where_a_rule_checks_them():
    policy = parse_policy({**BASE, "tools": {"dataset_create": {"require": [
        {"path": "args.name", "op": "exists", "value": True}]}}})
    assert needs_arguments(policy, "dataset_create", "write", "medium")
    assert not needs_arguments(policy, "pool_list", "read", "low")
    assert not needs_arguments(None, "pool_list", "read", "low")


def test_the_engine_stays_pure():
    """Replay drives the engine; it does not change it (the engine module imports no replay code)."""
    import gateway.policy.engine as engine

    assert "replay" not in open(engine.__file__).read()
