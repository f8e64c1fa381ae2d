"""Gateway processes and their heartbeats (GatewayProcess): every process writes one every PORTCULLIS_HEARTBEAT_S;
any process settles what a peer that stopped beating left behind (its pending calls `interrupted`, its legacy
streams' sessions ended), within a minute of its death rather than when a new process starts. A process that
drains (SIGTERM) settles its own and removes its row. Synchronous: run on the database threads.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q

from gateway.calls import audit, session_records
from gateway.models import Call, CallTask, GatewayProcess

DEAD_AFTER_BEATS = 3
GONE = "interrupted: outcome unknown (the gateway process running it stopped)"


def beat(process: str, now: datetime, draining: bool, sessions: int, upstreams: dict[str, int]) -> None:
    updated = GatewayProcess.objects.filter(id=process).update(heartbeat_at=now, draining=draining,
                                                               sessions=sessions, upstreams=upstreams)
    if not updated:
        GatewayProcess.objects.create(id=process, started_at=now, heartbeat_at=now, draining=draining,
                                      sessions=sessions, upstreams=upstreams)


def settle_dead_peers(now: datetime) -> int:
    """Pending calls and legacy sessions of processes silent for three beats are settled; their rows go. Returns the
    number of calls settled."""
    cutoff = now - timedelta(seconds=settings.PORTCULLIS_HEARTBEAT_S * DEAD_AFTER_BEATS)
    dead = list(GatewayProcess.objects.filter(heartbeat_at__lt=cutoff).values_list("id", flat=True))
    if not dead:
        return 0
    count = audit.settle_rows(Call.objects.filter(worker__in=dead), now=now, outcome=Call.Outcome.INTERRUPTED,
                              error=GONE)
    CallTask.objects.filter(worker__in=dead, status=CallTask.Status.WORKING).update(  # held calls followed as tasks
        status=CallTask.Status.CANCELLED, updated_at=now,
        status_message="the gateway process holding the call stopped; call the tool again")
    for process in dead:
        session_records.end_legacy_of(process, now)
    GatewayProcess.objects.filter(id__in=dead, heartbeat_at__lt=cutoff).delete()
    return count


def settle_own(process: str, now: datetime, reason: str) -> int:
    """A draining process past its bound: what it still has pending is settled, its legacy sessions end, its row
    goes. Returns the number of calls settled."""
    count = audit.settle_rows(Call.objects.filter(worker=process), now=now, outcome=Call.Outcome.INTERRUPTED,
                              error=reason)
    session_records.end_legacy_of(process, now)
    GatewayProcess.objects.filter(id=process).delete()
    return count


def serving(now: datetime) -> list[GatewayProcess]:
    """The processes that beat recently, oldest first (the dashboard's view)."""
    cutoff = now - timedelta(seconds=settings.PORTCULLIS_HEARTBEAT_S * DEAD_AFTER_BEATS)
    return list(GatewayProcess.objects.filter(Q(heartbeat_at__gte=cutoff)).order_by("started_at"))
