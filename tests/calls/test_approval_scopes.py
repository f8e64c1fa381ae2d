"""Approvals a person can shape (issue 16): two different people for a rule with `approvers: 2` (one approval does not
release, the same person twice is refused, either may deny, the audit row names both); how far an approval reaches
(this call once; these exact arguments for N minutes; the tool for the grant from now on); and a limit that escalates
to a person (`on_exceed: approve`) instead of refusing. Calls are admitted in-process (calls.admit), as the endpoint
does, and released as the holding code does (calls.release)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from gateway import calls, policies
from gateway.calls import approvals
from gateway.grants import create_grant
from gateway.models import Approval, Call, Counter
from tests.dashboard.approval_fixtures import make_nas

pytestmark = pytest.mark.django_db(transaction=True)

TWO = {"version": "1", "default": "deny", "tools": {"share_create": {"action": "approve", "approvers": 2}}}
ESCALATE = {"version": "1", "default": "deny", "tools": {"share_create": {"limits": [
    {"counter": "shares", "window": "hour", "max": 2, "scope": "grant", "on_exceed": "approve"}]}}}


@pytest.fixture
def nas(db):
    server, tool = make_nas()
    users = {name: get_user_model().objects.create_user(name, password="pw-for-tests-1", is_staff=True)
             for name in ("alice", "bob")}
    return {"server": server, "tool": tool, "agent": create_grant("agent-a", [server], None), **users}


def call(nas, name: str = "team", now=None):
    return calls.admit(nas["agent"].token, nas["server"], "share_create", {"name": name}, now or timezone.now())


def test_two_people_must_approve_and_the_row_names_both(nas):
    policies.apply(nas["server"], TWO, actor="test")
    held = call(nas)
    approval = held.held
    assert approval.approvers_needed == 2
    approvals.decide(approval, user=nas["alice"], approve=True, now=timezone.now())
    approval.refresh_from_db()
    assert approval.state == Approval.State.PENDING and approval.first_approved_by == nas["alice"]
    with pytest.raises(approvals.ApprovalError, match="a second, different person"):
        approvals.decide(approval, user=nas["alice"], approve=True, now=timezone.now())
    approval.refresh_from_db()
    assert approval.state == Approval.State.PENDING  # the same person twice does not release it
    approvals.decide(approval, user=nas["bob"], approve=True, now=timezone.now())
    released = calls.release(held, timezone.now())
    assert released.forward
    row = Call.objects.get(pk=held.call_id)
    assert row.reason == f"approved by alice and bob (approval {approval.public_id})"
    calls.settle(released, outcome="ok", latency_ms=1.0, result_size=1, error="", now=timezone.now())
    assert Call.objects.get(pk=held.call_id).outcome == "ok"


def test_either_person_may_deny_after_the_first_approval(nas):
    policies.apply(nas["server"], TWO, actor="test")
    approval = call(nas).held
    approvals.decide(approval, user=nas["alice"], approve=True, now=timezone.now())
    approvals.decide(approval, user=nas["alice"], approve=False, reason="second thoughts", now=timezone.now())
    approval.refresh_from_db()
    assert approval.state == Approval.State.DENIED and approval.decided_by == nas["alice"]


def test_a_second_approval_does_not_run_a_call_twice(nas):
    """One approval for one call: the identical call after it needs a new approval."""
    held = call(nas)
    approvals.decide(held.held, user=nas["alice"], approve=True, now=timezone.now())
    assert calls.release(held, timezone.now()).forward
    again = call(nas)
    assert again.held is not None and again.held.pk != held.held.pk


def test_approved_for_minutes_runs_identical_calls_until_then_and_only_identical_ones(nas):
    held = call(nas)
    now = timezone.now()
    approvals.decide(held.held, user=nas["alice"], approve=True, minutes=15, now=now)
    assert calls.release(held, now).forward
    for _ in range(3):  # identical calls run without asking, each audited with the approval
        admission = call(nas)
        assert admission.forward and admission.held is None
        row = Call.objects.get(pk=admission.call_id)
        assert row.approval_id == held.held.pk and row.decision == "approve"
        assert row.reason.startswith(f"approved by alice (approval {held.held.public_id}, for identical calls until")
    assert call(nas, "other-share").held is not None  # other arguments: asked again
    later = call(nas, now=now + timedelta(minutes=16))
    assert not later.forward  # past its time: a new approval is needed
    with pytest.raises(approvals.ApprovalError, match="choose 15, 60, 240 minutes"):
        approvals.decide(call(nas, "x").held, user=nas["alice"], approve=True, minutes=7, now=timezone.now())


def test_approved_for_minutes_is_void_when_the_policy_changes(nas):
    held = call(nas)
    approvals.decide(held.held, user=nas["alice"], approve=True, minutes=60, now=timezone.now())
    policies.apply(nas["server"], {**TWO, "tools": {"share_create": {"action": "approve"}},
                                   "on_deny": "changed"}, actor="test")
    assert call(nas).held is not None


def test_a_limit_that_escalates_holds_the_call_past_max_and_runs_it_once_approved(nas):
    policies.apply(nas["server"], ESCALATE, actor="test")
    assert call(nas, "a").forward and call(nas, "b").forward
    third = call(nas, "c")
    assert not third.forward and third.held is not None
    assert third.held.why == "rate limit shares reached (2 per hour): this call waits for a person's approval"
    assert third.held.rule == "/tools/share_create/limits/0"
    approvals.decide(third.held, user=nas["bob"], approve=True, now=timezone.now())
    released = calls.release(third, timezone.now())
    assert released.forward
    assert Counter.objects.get().n == 2  # never pushed past max
    row = Call.objects.get(pk=third.call_id)
    assert row.decision == "approve" and row.reason == f"approved by bob (approval {third.held.public_id})"
    fourth = call(nas, "c")  # the same call again: that approval was used; a new one is asked for
    assert fourth.held is not None and fourth.held.pk != third.held.pk


def test_a_limit_that_refuses_still_refuses(nas):
    refusing = {"version": "1", "default": "deny", "tools": {"share_create": {"limits": [
        {"counter": "shares", "window": "hour", "max": 1, "scope": "grant"}]}}}
    policies.apply(nas["server"], refusing, actor="test")
    assert call(nas, "a").forward
    refused = call(nas, "b")
    assert not refused.forward and refused.held is None and refused.refusal == "limit"


def test_an_approved_call_past_a_full_limit_is_refused_and_keeps_its_approval(nas):
    """The call an approval was given for comes back when its limit is used up: refused with the limit's text (the
    row is written with the approval's reason), and the person's approval is not spent on nothing."""
    policies.apply(nas["server"], {"version": "1", "default": "deny", "tools": {"share_create": {
        "action": "approve", "limits": [{"counter": "shares", "window": "hour", "max": 1, "scope": "grant"}]}}},
        actor="test")
    first = call(nas, "a")
    approvals.decide(first.held, user=nas["alice"], approve=True, now=timezone.now())  # the agent stopped waiting
    other = call(nas, "b")
    approvals.decide(other.held, user=nas["alice"], approve=True, now=timezone.now())
    assert calls.release(other, timezone.now()).forward  # uses the one call of the hour
    again = call(nas, "a")
    assert not again.forward and again.refusal == "limit" and again.message.startswith("rate limit shares exceeded")
    first.held.refresh_from_db()
    assert first.held.state == Approval.State.APPROVED
