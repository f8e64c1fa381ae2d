"""Which policy version decides a grant's calls: the grant's own active override for the server, else the
server's. Written in the ORM (policies.applicable: approvals, the builder) and in SQL (the hot path's single round
trip, calls.admit, and tools/list's policy_for); every case here checks that all three agree."""

from __future__ import annotations

import pytest
from django.utils import timezone

from gateway import calls, policies
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import Call

ALLOW = {"version": "1", "default": "allow"}
DENY = {"version": "1", "default": "deny"}

# (the server's policy, this grant's override, another grant's override) -> whose version applies
CASES = [
    (None, None, None, None),
    (ALLOW, None, None, "server"),
    (ALLOW, DENY, None, "own"),
    (None, DENY, None, "own"),
    (ALLOW, None, DENY, "server"),
    (None, None, DENY, None),
    (ALLOW, DENY, ALLOW, "own"),
]


@pytest.mark.parametrize(("server_doc", "own_doc", "other_doc", "applies"), CASES)
def test_the_orm_and_the_sql_agree_on_which_version_applies(server, grant_that_may, server_doc, own_doc,
                                                            other_doc, applies):
    sync_tools(server, [{"name": "read_file", "inputSchema": {"type": "object"}}], timezone.now())
    grant, other = grant_that_may.grant, create_grant("other", [server], None).grant
    made = {}
    if server_doc:
        made["server"] = policies.apply(server, server_doc, actor="test").version
    if own_doc:
        made["own"] = policies.apply(server, own_doc, grant=grant, actor="test").version
    if other_doc:
        policies.apply(server, other_doc, grant=other, actor="test")
    expected = made[applies].pk if applies else None
    assert getattr(policies.applicable(server, grant), "pk", None) == expected
    assert calls.policy_for(server, grant)[0] == expected
    calls.admit(grant_that_may.token, server, "read_file", {}, timezone.now())
    assert Call.objects.get().policy_version_id == expected


def test_a_rolled_back_override_no_longer_applies(server, grant_that_may):
    grant = grant_that_may.grant
    server_version = policies.apply(server, ALLOW, actor="test").version
    first = policies.apply(server, DENY, grant=grant, actor="test").version
    policies.apply(server, ALLOW, grant=grant, actor="test")
    assert policies.applicable(server, grant).pk != first.pk
    assert policies.applicable(server, None).pk == server_version.pk == calls.policy_for(server, create_grant(
        "third", [server], None).grant)[0]
