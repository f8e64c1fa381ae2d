"""A grant cannot flood the approvals queue: past PORTCULLIS_PENDING_APPROVALS_PER_GRANT (default 20) pending
approvals, a call that needs a new one is refused with a reason the agent can act on and audited as refused; an
identical call still joins its pending approval, and decided or expired approvals free their place. Calls are
admitted in-process (calls.admit), as the endpoint does."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from gateway import calls
from gateway.calls import approvals
from gateway.grants import create_grant
from gateway.models import Approval, Call
from tests.dashboard.approval_fixtures import make_nas

FULL = ("too many approvals pending for this grant ({cap}): wait for an operator to decide, or ask one to clear "
        "the queue")


@pytest.fixture
def nas(db):
    server, tool = make_nas()  # share_create needs approval
    return {"server": server, "tool": tool, "agent": create_grant("agent-a", [server], None),
            "other": create_grant("agent-b", [server], None)}


def call(nas, name: str, who: str = "agent"):
    return calls.admit(nas[who].token, nas["server"], "share_create", {"name": name}, timezone.now())


def pending(grant) -> int:
    return Approval.objects.filter(grant=grant, state=Approval.State.PENDING).count()


def test_past_the_cap_a_call_needing_approval_is_refused_and_audited_as_refused(nas, settings):
    settings.PORTCULLIS_PENDING_APPROVALS_PER_GRANT = 3
    held = [call(nas, f"share-{n}") for n in range(3)]
    assert all(a.held is not None and not a.forward for a in held)
    refused = call(nas, "share-3")
    assert not refused.forward and refused.held is None
    assert refused.message == FULL.format(cap=3)
    row = Call.objects.get(pk=refused.call_id)
    assert (row.outcome, row.decision, row.refusal) == (Call.Outcome.REFUSED, Call.Decision.APPROVE, "approvals")
    assert row.reason == FULL.format(cap=3) and row.arguments == {"name": "share-3"}
    assert pending(nas["agent"].grant) == 3


def test_the_default_cap_is_twenty_pending_approvals(nas):
    assert all(call(nas, f"share-{n}").held is not None for n in range(20))
    assert call(nas, "share-20").message == FULL.format(cap=20)
    assert pending(nas["agent"].grant) == 20


def test_an_identical_call_at_the_cap_still_waits_for_its_own_approval(nas, settings):
    settings.PORTCULLIS_PENDING_APPROVALS_PER_GRANT = 2
    first = call(nas, "share-0")
    call(nas, "share-1")
    again = call(nas, "share-0")
    assert again.held is not None and again.held.pk == first.held.pk
    assert pending(nas["agent"].grant) == 2


def test_the_cap_counts_each_grant_on_its_own(nas, settings):
    settings.PORTCULLIS_PENDING_APPROVALS_PER_GRANT = 2
    call(nas, "share-0")
    call(nas, "share-1")
    assert call(nas, "share-2").held is None
    assert call(nas, "share-2", who="other").held is not None


def test_a_decided_or_expired_approval_frees_its_place(nas, settings, staff):
    settings.PORTCULLIS_PENDING_APPROVALS_PER_GRANT = 2
    first, second = call(nas, "share-0"), call(nas, "share-1")
    assert call(nas, "share-2").held is None
    approvals.decide(first.held, user=staff, approve=False, reason="not now", now=timezone.now())
    assert call(nas, "share-2").held is not None
    Approval.objects.filter(pk=second.held.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert call(nas, "share-3").held is not None
    assert call(nas, "share-4").held is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_never_push_the_queue_past_the_cap(nas, settings):
    settings.PORTCULLIS_PENDING_APPROVALS_PER_GRANT = 3
    threads_n = 8
    start = threading.Barrier(threads_n, timeout=10)
    results: list = []

    def one(n: int) -> None:
        try:
            start.wait()
            results.append(call(nas, f"share-{n}"))
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == threads_n
    assert sum(a.held is not None for a in results) == 3
    assert sum(a.message == FULL.format(cap=3) for a in results) == threads_n - 3
    assert pending(nas["agent"].grant) == 3
