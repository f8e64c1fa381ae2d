"""Agent sessions as rows every gateway process can read (McpSession): opened at initialize, looked up by any
replica that gets a request of the session, touched while in use, ended by DELETE, by its legacy stream's end, by
its grant's cap or by idling past PORTCULLIS_SESSION_IDLE_S. Synchronous: run on the database threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from gateway.models import McpSession


@dataclass(frozen=True)
class SessionRecord:
    id: str
    grant_id: int
    server_id: int
    slug: str
    token_digest: str
    protocol_version: str
    capabilities: dict
    private: bool
    legacy: bool


def _record(row: McpSession, slug: str) -> SessionRecord:
    return SessionRecord(id=row.id, grant_id=row.grant_id, server_id=row.server_id, slug=slug,
                         token_digest=row.token_digest, protocol_version=row.protocol_version,
                         capabilities=row.capabilities or {}, private=row.private, legacy=row.legacy)


def idle_cutoff(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.PORTCULLIS_SESSION_IDLE_S)


def open_session(record: SessionRecord, process: str, now: datetime,
                 busy: frozenset[str]) -> tuple[str | None, list[str]]:
    """Store a new session, making room in its grant's cap across every process: at the cap the grant's own least
    recently used session that this process is running no call of (`busy`) is ended; another process's view of it
    ends within PORTCULLIS_SESSION_RECHECK_S, cancelling what it still runs with that reason. Returns (None, the
    sessions ended to make room) when stored, else (why there is no room, [])."""
    cap = settings.PORTCULLIS_SESSIONS_PER_GRANT
    with transaction.atomic():
        on_server = McpSession.objects.filter(server_id=record.server_id, ended_at__isnull=True,
                                              last_seen_at__gte=idle_cutoff(now)).count()
        if on_server >= settings.PORTCULLIS_SESSIONS_PER_SERVER:
            return (f"this server has {settings.PORTCULLIS_SESSIONS_PER_SERVER} agent sessions open on this gateway: "
                    "try again later, or use the stateless era, which needs no session"), []
        open_rows = McpSession.objects.select_for_update().filter(grant_id=record.grant_id, ended_at__isnull=True,
                                                                  last_seen_at__gte=idle_cutoff(now))
        count, ended = open_rows.count(), []
        if count >= cap:
            oldest = list(open_rows.exclude(id__in=busy).order_by("last_seen_at", "created_at")
                          .values_list("id", flat=True)[: count - cap + 1])
            if len(oldest) < count - cap + 1:
                return (f"this grant has {cap} sessions open on this gateway, all in use: end one (HTTP DELETE "
                        "with its Mcp-Session-Id) or wait for a call to finish"), []
            McpSession.objects.filter(id__in=oldest).update(ended_at=now,
                                                            end_reason="closed: its grant opened too many sessions")
            ended = oldest
        McpSession.objects.create(id=record.id, grant_id=record.grant_id, server_id=record.server_id,
                                  token_digest=record.token_digest, protocol_version=record.protocol_version,
                                  capabilities=record.capabilities, private=record.private, legacy=record.legacy,
                                  process=process, created_at=now, last_seen_at=now)
    return None, ended


def find(session_id: str, slug: str, now: datetime) -> SessionRecord | None:
    """The open session with this id on this server, touched as used; None when unknown, ended or idle too long."""
    row = (McpSession.objects.filter(id=session_id, server__slug=slug, ended_at__isnull=True,
                                     last_seen_at__gte=idle_cutoff(now))
           .select_related("server").only("id", "grant_id", "server_id", "server__slug", "token_digest",
                                          "protocol_version", "capabilities", "private", "legacy").first())
    if row is None:
        return None
    McpSession.objects.filter(id=session_id).update(last_seen_at=now)
    return _record(row, slug)


def still_open(session_ids: list[str], used: list[str], now: datetime) -> set[str]:
    """Of these sessions, those still open; those in `used` (used here since the last check) are touched."""
    if not session_ids:
        return set()
    rows = McpSession.objects.filter(id__in=session_ids, ended_at__isnull=True, last_seen_at__gte=idle_cutoff(now))
    alive = set(rows.values_list("id", flat=True))
    touched = [session_id for session_id in used if session_id in alive]
    if touched:
        McpSession.objects.filter(id__in=touched).update(last_seen_at=now)
    return alive


def end(session_id: str, now: datetime, reason: str) -> bool:
    return bool(McpSession.objects.filter(id=session_id, ended_at__isnull=True).update(ended_at=now,
                                                                                       end_reason=reason[:200]))


def end_idle(now: datetime) -> int:
    """Sessions nobody used within the idle limit, on any process, are ended; ended rows older than a day go."""
    count = McpSession.objects.filter(ended_at__isnull=True, last_seen_at__lt=idle_cutoff(now)).update(
        ended_at=now, end_reason="closed: idle too long")
    McpSession.objects.filter(ended_at__lt=now - timedelta(days=1)).delete()
    return count


def end_legacy_of(process: str, now: datetime) -> int:
    """A legacy HTTP+SSE session lives as long as its stream, which lives in one process: when that process is gone,
    so are its legacy sessions."""
    return McpSession.objects.filter(process=process, legacy=True, ended_at__isnull=True).update(
        ended_at=now, end_reason="closed: its stream's gateway process stopped")
