"""Agent sessions as rows any gateway process serves (gateway/calls/session_records.py): the grant's cap counted
across processes, its own least recently used idle session closed at the cap (never another grant's), a refusal
when all are in use, the idle limit, and lookups that only find an open session of the same server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gateway.calls import session_records
from gateway.calls.session_records import SessionRecord
from gateway.grants import create_grant
from gateway.models import McpSession

pytestmark = pytest.mark.django_db


def record(session_id: str, grant_id: int, server, private=False) -> SessionRecord:
    return SessionRecord(id=session_id, grant_id=grant_id, server_id=server.pk, slug=server.slug, token_digest="d",
                         protocol_version="2025-11-25", capabilities={}, private=private, legacy=False)


@pytest.fixture
def grants(server):
    return create_grant("a", [server], None).grant.pk, create_grant("b", [server], None).grant.pk


def test_at_the_cap_the_grants_own_least_recently_used_session_is_closed(settings, server, grants):
    settings.PORTCULLIS_SESSIONS_PER_GRANT = 2
    a, b = grants
    now = timezone.now()
    assert session_records.open_session(record("b1", b, server), "p1", now, frozenset()) == (None, [])
    ended = [session_records.open_session(record(sid, a, server), "p1", now + timedelta(seconds=n), frozenset())
             for n, sid in enumerate(["a1", "a2", "a3"])]
    assert ended == [(None, []), (None, []), (None, ["a1"])]
    open_ids = set(McpSession.objects.filter(ended_at__isnull=True).values_list("id", flat=True))
    assert open_ids == {"b1", "a2", "a3"}
    assert McpSession.objects.get(id="a1").end_reason == "closed: its grant opened too many sessions"


def test_a_grant_whose_sessions_are_all_in_use_is_refused_and_nothing_is_closed(settings, server, grants):
    settings.PORTCULLIS_SESSIONS_PER_GRANT = 2
    a, _ = grants
    now = timezone.now()
    for sid in ("a1", "a2"):
        session_records.open_session(record(sid, a, server), "p1", now, frozenset())
    refusal, ended = session_records.open_session(record("a3", a, server), "p1", now, frozenset({"a1", "a2"}))
    assert ended == []
    assert refusal is not None and "all in use" in refusal and "DELETE" in refusal
    assert set(McpSession.objects.filter(ended_at__isnull=True).values_list("id", flat=True)) == {"a1", "a2"}


def test_a_session_is_found_only_open_on_its_own_server_and_within_the_idle_limit(settings, server, other_server,
                                                                                grants):
    settings.PORTCULLIS_SESSION_IDLE_S = 60
    a, _ = grants
    now = timezone.now()
    session_records.open_session(record("s1", a, server), "p1", now, frozenset())
    found = session_records.find("s1", server.slug, now + timedelta(seconds=30))
    assert found is not None and found.grant_id == a and found.slug == server.slug
    assert session_records.find("s1", other_server.slug, now) is None
    assert session_records.find("nope", server.slug, now) is None
    # found at +30 s touched it: still open at +80 s, not at +91 s
    assert session_records.find("s1", server.slug, now + timedelta(seconds=80)) is not None
    assert session_records.find("s1", server.slug, now + timedelta(seconds=141)) is None
    assert session_records.end_idle(now + timedelta(seconds=141)) == 1
    assert McpSession.objects.get(id="s1").end_reason == "closed: idle too long"


def test_still_open_touches_only_the_sessions_used_and_end_is_seen_by_every_process(server, grants):
    a, _ = grants
    now = timezone.now()
    for sid in ("s1", "s2"):
        session_records.open_session(record(sid, a, server), "p1", now, frozenset())
    later = now + timedelta(seconds=5)
    assert session_records.still_open(["s1", "s2"], ["s1"], later) == {"s1", "s2"}
    assert McpSession.objects.get(id="s1").last_seen_at == later
    assert McpSession.objects.get(id="s2").last_seen_at == now
    assert session_records.end("s2", later, "the agent's session ended")
    assert not session_records.end("s2", later, "again")
    assert session_records.still_open(["s1", "s2"], [], later) == {"s1"}
    assert session_records.find("s2", server.slug, later) is None


def test_a_server_at_its_cap_refuses_new_sessions_of_every_grant_and_closes_none(settings, server, grants):
    settings.PORTCULLIS_SESSIONS_PER_SERVER, settings.PORTCULLIS_SESSIONS_PER_GRANT = 2, 5
    a, b = grants
    now = timezone.now()
    assert session_records.open_session(record("a1", a, server), "p1", now, frozenset()) == (None, [])
    assert session_records.open_session(record("b1", b, server), "p1", now, frozenset()) == (None, [])
    refusal, ended = session_records.open_session(record("a2", a, server), "p1", now, frozenset())
    assert "this server has 2 agent sessions open" in refusal and ended == []
    assert McpSession.objects.filter(ended_at__isnull=True).count() == 2
