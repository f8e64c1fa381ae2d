"""A grant's rules as a layer on the server's policy (gateway/policy/layers.py): merge's precedence, and layer_of
finding the smallest layer or saying why there is none. Cases as data."""

from __future__ import annotations

import pytest

from gateway.policy import PolicyInvalid
from gateway.policy.editing import normalize
from gateway.policy.layers import layer_of, merge, rule_count

SERVER = normalize({
    "version": "1", "default": "deny", "hide": ["system_*"],
    "all_tools": {"limits": [{"counter": "all", "window": "minute", "max": 100, "scope": "grant"}]},
    "risk": {"read": {}, "destructive": {"action": "deny", "on_deny": "no deletes"}},
    "tools": {"cloud_backup_run": {"limits": [{"counter": "cb", "window": "minute", "max": 10, "scope": "grant"}]},
              "dataset_*": {"action": "approve"}},
})

MERGES = [
    pytest.param({"tools": {"share_create": {}}}, lambda d: d["tools"]["share_create"] == {}
                 and "cloud_backup_run" in d["tools"], id="a-tool-rule-is-added-the-rest-falls-through"),
    pytest.param({"tools": {"cloud_backup_run": {"action": "deny"}}},
                 lambda d: d["tools"]["cloud_backup_run"] == {"action": "deny"}, id="a-key-replaces-the-servers"),
    pytest.param({"risk": {"destructive": {"action": "approve"}}},
                 lambda d: d["risk"]["destructive"] == {"action": "approve"} and d["risk"]["read"] == {},
                 id="a-risk-rule-replaces-that-tier-only"),
    pytest.param({"hide": ["pool_*"]}, lambda d: d["hide"] == ["system_*", "pool_*"], id="hide-adds-never-removes"),
    pytest.param({"default": "allow", "show_denied": True},
                 lambda d: d["default"] == "allow" and d["show_denied"] is True, id="scalars-are-the-layers"),
    pytest.param({"all_tools": {"limits": [{"counter": "mine", "window": "hour", "max": 5, "scope": "grant"}]}},
                 lambda d: [lim["counter"] for lim in d["all_tools"]["limits"]] == ["all", "mine"],
                 id="limits-for-all-tools-add-up"),
    pytest.param({}, lambda d: d == SERVER, id="an-empty-layer-is-the-servers-policy"),
]


@pytest.mark.parametrize("layer,check", MERGES)
def test_merge_puts_the_layer_on_top_of_the_server(layer, check):
    assert check(merge(SERVER, layer))
    assert layer_of(merge(SERVER, layer), SERVER) == layer  # and the layer is found back from the result


def test_without_a_server_policy_the_layer_is_the_whole_policy():
    assert merge(None, {"tools": {"x": {}}}) == {"version": "1", "default": "deny", "tools": {"x": {}}}
    assert layer_of({"version": "1", "default": "allow"}, None) == {"default": "allow"}


REFUSED = [
    pytest.param(lambda d: d["tools"].pop("cloud_backup_run"), "/tools/cloud_backup_run", id="removing-a-tool-rule"),
    pytest.param(lambda d: d["risk"].pop("destructive"), "/risk/destructive", id="removing-a-tier-rule"),
    pytest.param(lambda d: d.pop("hide"), "/hide", id="unhiding"),
    pytest.param(lambda d: d.pop("all_tools"), "/all_tools/limits", id="dropping-a-limit-for-all-tools"),
]


@pytest.mark.parametrize("change,pointer", REFUSED)
def test_a_layer_never_removes_a_server_rule_and_says_which(change, pointer):
    import copy

    document = copy.deepcopy(SERVER)
    change(document)
    with pytest.raises(PolicyInvalid) as caught:
        layer_of(document, SERVER)
    assert [p.pointer for p in caught.value.problems] == [pointer]
    assert "cannot remove" in str(caught.value) or "never less" in str(caught.value) or "not remove" in \
        str(caught.value)


def test_a_layer_that_no_longer_fits_the_server_is_refused_by_merge():
    layer = {"tools": {"x": {"limits": [{"counter": "all", "window": "hour", "max": 1, "scope": "grant"}]}}}
    with pytest.raises(PolicyInvalid):  # the counter "all" is the server's, with another window
        merge(SERVER, layer)


def test_rule_count_says_how_much_a_grant_adds():
    assert rule_count(None) == rule_count({}) == 0
    assert rule_count({"tools": {"a": {}, "b": {}}, "hide": ["x"], "default": "allow"}) == 4
