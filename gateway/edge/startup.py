"""The gateway process's start-up work, heartbeat and housekeeping. daphne sends no lifespan events, so the start-up
(audit rows left pending by dead processes marked interrupted) runs when the server starts listening
(config/serve.py) or at the latest before the first MCP request; it starts the heartbeat (gateway/calls/processes.py:
peers settle what a dead process left within a minute) and the housekeeping."""

from __future__ import annotations

import asyncio
import logging

from django.db import DatabaseError
from django.utils import timezone

from gateway.calls import (
    approvals,
    audit_archive,
    audit_chain,
    audit_stream,
    dbthreads,
    processes,
    ratelimit,
    session_records,
)
from gateway.calls.audit import WORKER_ID, mark_interrupted
from gateway.notify import sender
from gateway.protocol import peers

log = logging.getLogger("portcullis.endpoint")

MAINTENANCE_EVERY_S = 600  # sweep ended counter windows and overdue approvals this often
_started = False
_maintenance: asyncio.Task | None = None
_heartbeat: asyncio.Task | None = None


async def on_first_request() -> None:
    """daphne sends no lifespan events, so process start-up work runs before the first MCP request."""
    global _started, _maintenance, _heartbeat
    if _started:
        return
    peers.listen()  # other processes may pass this one answers, legacy SSE messages and parked calls' retries
    try:
        count = await dbthreads.run(mark_interrupted, timezone.now())
    except DatabaseError as exc:  # tried again before the next request; this one is answered on its own merits
        log.error("start-up work postponed, the database is unavailable: %s", exc)
        return
    _started = True
    audit_stream.start()
    sender.start()  # notifications (gateway/notify/)
    if count:
        log.warning("marked %d audit rows left in flight by dead gateway processes as interrupted", count)
    _maintenance = asyncio.create_task(_maintain(), name="portcullis:maintenance")
    _heartbeat = asyncio.create_task(_beat(), name="portcullis:heartbeat")


def _housekeeping() -> None:
    now = timezone.now()
    ratelimit.sweep(int(now.timestamp()))
    approvals.expire_overdue(now)
    audit_archive.archive_due(now)


async def _maintain() -> None:
    """Counter rows of ended windows and overdue approvals would otherwise only ever accumulate."""
    while True:
        try:
            await dbthreads.run(_housekeeping)
        except Exception:  # a failed sweep is retried next time; it never affects calls
            log.exception("housekeeping failed")
        await asyncio.sleep(MAINTENANCE_EVERY_S)


def _beat_once(draining: bool, sessions: int, upstreams: dict[str, int]) -> None:
    now = timezone.now()
    processes.beat(WORKER_ID, now, draining, sessions, upstreams)
    audit_chain.anchor(WORKER_ID, now)
    settled = processes.settle_dead_peers(now)
    if settled:
        log.warning("settled %d audit rows of a gateway process that stopped as interrupted", settled)
    session_records.end_idle(now)


async def _beat() -> None:
    """This process is alive (and what it holds); peers that stopped are settled; idle sessions end."""
    from django.conf import settings

    from gateway.edge import drain
    from gateway.protocol.sessions import REGISTRY

    while True:
        try:
            await dbthreads.run(_beat_once, drain.draining(), len(REGISTRY.sessions), REGISTRY.upstream_counts())
        except Exception as exc:  # noqa: BLE001 - the next beat tries again; calls are never affected
            log.warning("heartbeat not written: %s", exc)
        await asyncio.sleep(settings.PORTCULLIS_HEARTBEAT_S)
