"""Grants authenticate by bearer token: unknown, revoked, expired → 401; another server → 403."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gateway.grants import AuthFailure, CallGrant, GrantError, authenticate, create_grant, parse_duration, revoke


def test_it_authenticates_a_grant_that_may(server, grant_that_may):
    grant = grant_that_may.grant
    assert authenticate(grant_that_may.token, server, timezone.now()) == CallGrant(grant.pk, grant.name)


@pytest.mark.parametrize("token", [None, "", "Bearer x", "pcl_short", "pcl_" + "é" * 30],
                         ids=["none", "empty", "not-ours", "too-short", "non-ascii"])
def test_it_refuses_malformed_tokens_with_401(server, token):
    with pytest.raises(AuthFailure) as info:
        authenticate(token, server, timezone.now())
    assert info.value.status == 401


def test_it_refuses_a_forged_token_with_the_right_prefix(server, grant_that_may):
    forged = grant_that_may.token[:-4] + ("AAAA" if not grant_that_may.token.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthFailure, match="unknown token") as info:
        authenticate(forged, server, timezone.now())
    assert info.value.status == 401


def test_it_refuses_a_revoked_grant_with_401(server, revoked_grant):
    with pytest.raises(AuthFailure, match="revoked") as info:
        authenticate(revoked_grant.token, server, timezone.now())
    assert info.value.status == 401


def test_it_refuses_an_expired_grant_with_401(server):
    new = create_grant("agent-expiring", [server], timezone.now() + timedelta(minutes=5))
    assert authenticate(new.token, server, timezone.now()) == CallGrant(new.grant.pk, new.grant.name)
    with pytest.raises(AuthFailure, match="expired") as info:
        authenticate(new.token, server, timezone.now() + timedelta(minutes=6))
    assert info.value.status == 401


def test_it_refuses_a_grant_for_another_server_with_403(server, grant_for_other_server):
    with pytest.raises(AuthFailure, match="does not cover") as info:
        authenticate(grant_for_other_server.token, server, timezone.now())
    assert info.value.status == 403


def test_it_refuses_a_disabled_server_with_403(server, grant_that_may):
    server.enabled = False
    server.save(update_fields=["enabled"])
    with pytest.raises(AuthFailure, match="disabled by an operator") as info:
        authenticate(grant_that_may.token, server, timezone.now())
    assert info.value.status == 403


def test_it_refreshes_last_used_at_at_most_once_a_minute(server, grant_that_may):
    now = timezone.now()
    authenticate(grant_that_may.token, server, now)
    grant_that_may.grant.refresh_from_db()
    assert grant_that_may.grant.last_used_at == now
    authenticate(grant_that_may.token, server, now + timedelta(seconds=30))
    grant_that_may.grant.refresh_from_db()
    assert grant_that_may.grant.last_used_at == now
    authenticate(grant_that_may.token, server, now + timedelta(seconds=61))
    grant_that_may.grant.refresh_from_db()
    assert grant_that_may.grant.last_used_at == now + timedelta(seconds=61)


def test_revoking_twice_is_harmless(grant_that_may):
    assert revoke(grant_that_may.grant, timezone.now()) is True
    assert revoke(grant_that_may.grant, timezone.now()) is False


def test_it_refuses_duplicate_names_and_grants_without_servers(server, grant_that_may):
    with pytest.raises(GrantError, match="already exists"):
        create_grant("agent-may", [server], None)
    with pytest.raises(GrantError, match="at least one server"):
        create_grant("agent-none", [], None)


@pytest.mark.parametrize(("text", "expected"), [
    ("90m", timedelta(minutes=90)), ("12h", timedelta(hours=12)), ("30d", timedelta(days=30)),
    ("2w", timedelta(weeks=2)),
])
def test_it_parses_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "0d", "-1d", "3y", "d30"])
def test_it_rejects_bad_durations_with_an_example(text):
    with pytest.raises(GrantError, match="e.g. 90m"):
        parse_duration(text)
