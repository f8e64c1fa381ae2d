"""The gateway process's start-up work and housekeeping. daphne sends no lifespan events, so the first MCP request
runs the start-up (audit rows left pending by dead processes marked interrupted) and starts the housekeeping."""

from __future__ import annotations

import asyncio
import logging

from django.db import DatabaseError
from django.utils import timezone

from gateway.calls import approvals, dbthreads, ratelimit
from gateway.calls.audit import mark_interrupted

log = logging.getLogger("portcullis.endpoint")

MAINTENANCE_EVERY_S = 600  # sweep ended counter windows and overdue approvals this often
_started = False
_maintenance: asyncio.Task | None = None


async def on_first_request() -> None:
    """daphne sends no lifespan events, so process start-up work runs before the first MCP request."""
    global _started, _maintenance
    if _started:
        return
    try:
        count = await dbthreads.run(mark_interrupted, timezone.now())
    except DatabaseError as exc:  # tried again before the next request; this one is answered on its own merits
        log.error("start-up work postponed, the database is unavailable: %s", exc)
        return
    _started = True
    if count:
        log.warning("marked %d audit rows left in flight by dead gateway processes as interrupted", count)
    _maintenance = asyncio.create_task(_maintain(), name="portcullis:maintenance")


def _housekeeping() -> None:
    now = timezone.now()
    ratelimit.sweep(int(now.timestamp()))
    approvals.expire_overdue(now)


async def _maintain() -> None:
    """Counter rows of ended windows and overdue approvals would otherwise only ever accumulate."""
    while True:
        try:
            await dbthreads.run(_housekeeping)
        except Exception:  # a failed sweep is retried next time; it never affects calls
            log.exception("housekeeping failed")
        await asyncio.sleep(MAINTENANCE_EVERY_S)
