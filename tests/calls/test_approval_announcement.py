"""A held call's approval is announced to the dashboards once the call's audit row is written. A dashboard renders
the queue on that event: announced before the row, the card showed nobody waiting (no countdown, no count in the
navigation badge) until some later event. Calls are admitted in-process (calls.admit), as the endpoint does."""

from __future__ import annotations

import pytest
from django.utils import timezone

from gateway import calls
from gateway.calls import approvals
from gateway.grants import create_grant
from gateway.models import Call
from tests.dashboard.approval_fixtures import make_nas


@pytest.fixture
def nas(db):
    server, tool = make_nas()  # share_create needs approval
    return {"server": server, "token": create_grant("agent-a", [server], None).token}


def test_the_approval_is_announced_when_the_held_call_is_in_the_log_for_a_new_and_a_joined_approval(nas, monkeypatch):
    seen = []

    def publish(approval) -> None:  # what a dashboard reads when the event reaches it
        waiting = Call.objects.filter(approval=approval, outcome=Call.Outcome.PENDING).count()
        seen.append((approval.public_id, waiting, approvals.pending_count(timezone.now())))

    monkeypatch.setattr(approvals, "publish", publish)
    first = calls.admit(nas["token"], nas["server"], "share_create", {"name": "media"}, timezone.now())
    assert first.held is not None and not first.forward
    assert seen == [(first.held.public_id, 1, 1)]
    # An identical call waits on the same approval, and says so too (the card may have shown nobody waiting).
    second = calls.admit(nas["token"], nas["server"], "share_create", {"name": "media"}, timezone.now())
    assert second.held.public_id == first.held.public_id
    assert seen[1:] == [(first.held.public_id, 2, 1)]
