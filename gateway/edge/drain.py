"""Graceful stop. On SIGTERM (config/serve.py) the process stops taking new work: /readyz fails, so the balancer
stops sending; an MCP request that still arrives is answered 503 with Retry-After and `Connection: close` before
anything is done (a balancer may retry it elsewhere). The requests in flight (calls, held calls, legacy SSE
messages) get PORTCULLIS_DRAIN_S to finish; what is left is cancelled with a reason its audit row keeps, anything
still pending is settled `interrupted`, the process's own row and legacy sessions go, and the server stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from django.conf import settings
from django.utils import timezone

from gateway.calls import dbthreads, processes
from gateway.calls.audit import WORKER_ID

log = logging.getLogger("portcullis.drain")

STOPPING = "cancelled: the gateway process was stopping and its drain bound passed"
_draining = False
_inflight: set[asyncio.Task] = set()


def draining() -> bool:
    return _draining


def track(task: asyncio.Task) -> asyncio.Task:
    """A request's work, waited for by a drain."""
    _inflight.add(task)
    task.add_done_callback(_inflight.discard)
    return task


def in_flight() -> int:
    return len(_inflight)


async def drain(stop: Callable[[], None], bound: float | None = None) -> None:
    """Stop taking work, let what runs finish within the bound, settle the rest, then `stop()` the server."""
    global _draining
    if _draining:
        return
    _draining = True
    bound = settings.PORTCULLIS_DRAIN_S if bound is None else bound
    log.warning("draining: %d requests in flight, up to %s s to finish", len(_inflight), bound)
    try:
        await _beat_draining()
        if _inflight:
            await asyncio.wait(set(_inflight), timeout=bound)
        if _inflight:
            log.warning("drain bound passed: cancelling %d requests", len(_inflight))
            for task in list(_inflight):
                task.cancel(STOPPING)
            await asyncio.wait(set(_inflight), timeout=5)
        await _close_upstreams()
        settled = await dbthreads.run(processes.settle_own, WORKER_ID, timezone.now(),
                                      "interrupted: outcome unknown (the gateway process stopped)")
        if settled:
            log.warning("settled %d audit rows still pending as interrupted", settled)
    except Exception:  # stop anyway: peers settle what is left within a minute
        log.exception("drain did not finish cleanly")
    finally:
        stop()


async def _beat_draining() -> None:
    from gateway.protocol.sessions import REGISTRY

    try:
        await dbthreads.run(processes.beat, WORKER_ID, timezone.now(), True, len(REGISTRY.sessions),
                            REGISTRY.upstream_counts())
    except Exception as exc:  # noqa: BLE001 - readiness already fails; the row is only for people
        log.warning("draining not recorded: %s", exc)


async def _close_upstreams() -> None:
    """Private links end with their sessions' views; shared links close (a stdio upstream's process exits)."""
    from gateway.protocol.sessions import REGISTRY

    for session_id in list(REGISTRY.sessions):
        await REGISTRY.drop(session_id, STOPPING)
    links = [*REGISTRY.shared.values(), *REGISTRY.listing.values()]
    await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
