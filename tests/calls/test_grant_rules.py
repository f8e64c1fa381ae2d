"""A grant's own rules are a layer on its server's policy (issue 13, item 3): "Approve & always allow" adds one
rule for the grant, and later changes to the server's policy still reach that grant; a server change its rules no
longer fit is refused with the grant's name; existing complete copies are turned into rules without changing what
decides any call."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from gateway import policies
from gateway.calls import approvals
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import Approval, PolicyVersion
from gateway.policy import PolicyInvalid

SERVER = {"version": "1", "default": "deny", "risk": {"read": {}}}


@pytest.fixture
def catalogue(server):
    sync_tools(server, [{"name": n, "inputSchema": {"type": "object"}} for n in ("read_file", "write_file", "rm")],
               timezone.now())
    policies.apply(server, SERVER, actor="test")
    return server


def always_allow(server, grant, tool: str, user=None):
    """What approvals.allow_from_now_on writes, without an approval row."""
    base = policies.applicable(server, grant)
    document = dict(base.document, tools={**base.document.get("tools", {}), tool: {}})
    return policies.apply(server, document, grant=grant, actor="alice")


def test_a_server_change_after_always_allow_still_reaches_the_grant(catalogue, grant_that_may):
    grant = grant_that_may.grant
    always_allow(catalogue, grant, "write_file")
    policies.apply(catalogue, {**SERVER, "tools": {"rm": {"action": "approve"}}}, actor="bob")
    decides = policies.applicable(catalogue, grant).document
    assert decides["tools"] == {"rm": {"action": "approve"}, "write_file": {}}  # the server's change, and its own
    own = policies.active_version(catalogue, grant)
    assert own.layer == {"tools": {"write_file": {}}} and own.base == policies.active_version(catalogue)
    assert own.summary.startswith(f"follows {catalogue.slug} v2")


def test_approve_and_always_allow_writes_one_rule_for_the_grant(catalogue, grant_that_may, django_user_model):
    grant = grant_that_may.grant
    approval = Approval.objects.create(
        public_id="a" * 16, grant=grant, server=catalogue, tool_name="write_file", argument_hash="0" * 64,
        arguments={}, policy_version=policies.applicable(catalogue, grant), tool_hash="",
        expires_at=timezone.now() + timedelta(hours=1))
    approvals.allow_from_now_on(approval, django_user_model.objects.create_user("alice"))
    assert policies.active_version(catalogue, grant).layer == {"tools": {"write_file": {}}}


def test_a_server_change_the_grants_rules_no_longer_fit_is_refused_with_its_name(catalogue, grant_that_may):
    grant = grant_that_may.grant
    limit = {"counter": "shared", "window": "minute", "max": 5, "scope": "grant"}
    policies.apply(catalogue, dict(policies.applicable(catalogue, grant).document,
                                   tools={"write_file": {"limits": [limit]}}), grant=grant, actor="alice")
    versions = PolicyVersion.objects.count()
    with pytest.raises(PolicyInvalid) as caught:
        policies.apply(catalogue, {**SERVER, "tools": {"rm": {"limits": [{**limit, "window": "hour"}]}}},
                       actor="bob")
    assert f"grant {grant.name}'s rules no longer fit" in str(caught.value)
    assert PolicyVersion.objects.count() == versions  # nothing saved, neither the server's nor the grant's


def test_a_grant_policy_that_removes_a_server_rule_is_refused_with_what_to_do(catalogue, grant_that_may):
    with pytest.raises(PolicyInvalid) as caught:
        policies.apply(catalogue, {"version": "1", "default": "deny"}, grant=grant_that_may.grant, actor="alice")
    assert caught.value.problems[0].pointer == "/risk/read" and "cannot remove it" in str(caught.value)


def test_rolling_a_grant_back_puts_its_old_rules_on_the_servers_current_policy(catalogue, grant_that_may):
    grant = grant_that_may.grant
    first = always_allow(catalogue, grant, "write_file").version
    always_allow(catalogue, grant, "rm")
    policies.apply(catalogue, {**SERVER, "risk": {"read": {}, "write": {"action": "approve"}}}, actor="bob")
    policies.rollback(catalogue, first.number, grant=grant, actor="alice")
    decides = policies.applicable(catalogue, grant).document
    assert decides["tools"] == {"write_file": {}} and decides["risk"]["write"] == {"action": "approve"}


def test_existing_complete_copies_become_rules_without_changing_any_decision(catalogue, grant_that_may):
    migration = importlib.import_module("gateway.migrations.0005_grant_rules_layered")
    grant = grant_that_may.grant
    fork = dict(SERVER, tools={"write_file": {}})
    PolicyVersion.objects.create(server=catalogue, grant=grant, number=1, document=policies.canonical(fork),
                                 is_active=True)
    other = create_grant("other", [catalogue], None).grant
    removes = policies.canonical({"version": "1", "default": "deny"})  # drops the server's read rule
    PolicyVersion.objects.create(server=catalogue, grant=other, number=1, document=removes, is_active=True)
    before = {g: policies.applicable(catalogue, g).document for g in (grant, other)}
    migration.layer_existing_overrides(apps, None)
    own = policies.active_version(catalogue, grant)
    assert own.layer == {"tools": {"write_file": {}}} and own.base == policies.active_version(catalogue)
    assert policies.active_version(catalogue, other).layer is None  # stays a complete copy, flagged in the UI
    assert {g: policies.applicable(catalogue, g).document for g in (grant, other)} == before
