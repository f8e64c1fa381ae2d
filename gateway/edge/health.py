"""Health probes for load balancers and orchestrators, answered before Django (no session, no sign-in, no Host
check: a balancer probes by address).

- `/healthz`: the process answers. Nothing else is touched (no database, no upstream): a process busy starting
  upstream processes is alive.
- `/readyz`: should this process get new work? Not while draining (SIGTERM); not while the database or the channel
  layer (Redis, across processes: approvals and answers travel on it) cannot be reached. Upstreams are reported
  (how many connections per server are up) but never fail readiness: a down upstream is the same on every replica,
  and starting one must not take a replica out of rotation. The checks run in the background at most once a
  second and a probe answers from the latest ones at once (checks stuck for 5 s count as failed), so probing every
  second from several balancers under load costs one database round trip per second and never waits behind calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from channels.layers import get_channel_layer
from django.db import connection

from gateway.calls import dbthreads
from gateway.edge import drain

log = logging.getLogger("portcullis.health")

CACHE_S = 1.0  # checks run at most this often, in the background: a probe never waits for them
STALE_S = 5.0  # checks that have not completed for this long count as failed (a hung database, a stuck thread)
CHECK_TIMEOUT_S = 2.0
READY_GROUP, READY_CHANNEL = "portcullis.ready", "portcullis.ready.probe"
_checks: dict = {}
_checked_at = 0.0
_refreshing: asyncio.Task | None = None


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _channel_layer() -> None:
    """A write and a delete on the layer (Redis across processes): what publishing events and passing answers need.
    Not a receive: a cancelled receive can leave a Redis layer's shared receive loop waiting."""
    layer = get_channel_layer()
    if layer is None:
        return
    await layer.group_add(READY_GROUP, READY_CHANNEL)
    await layer.group_discard(READY_GROUP, READY_CHANNEL)


async def _check(name: str, probe) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
        return "ok"
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - the kind of failure only: no addresses or secrets
        return f"unavailable ({type(exc).__name__})"


async def _refresh() -> None:
    global _checks, _checked_at
    database, layer = await asyncio.gather(_check("database", dbthreads.run(_database)),
                                           _check("channel layer", _channel_layer()))
    checks = {"database": database, "channel_layer": layer}
    if checks != _checks and any(v != "ok" for v in checks.values()):
        log.warning("not ready: %s", checks)
    elif checks != _checks and _checks:
        log.warning("ready again")
    _checks, _checked_at = checks, time.monotonic()


async def readiness() -> dict:
    """The latest checks (started again in the background when older than CACHE_S; the first probe waits for
    them), this process's drain state and what it holds."""
    global _refreshing
    now = time.monotonic()
    if now - _checked_at >= CACHE_S and (_refreshing is None or _refreshing.done()):
        _refreshing = asyncio.create_task(_refresh(), name="portcullis:readiness")
    if not _checks:
        await asyncio.wait({_refreshing}, timeout=CHECK_TIMEOUT_S + 0.5)
    checks = dict(_checks) or {"database": "not checked yet", "channel_layer": "not checked yet"}
    if _checks and time.monotonic() - _checked_at > STALE_S:
        checks["stale"] = f"the checks have not completed for {time.monotonic() - _checked_at:.0f} s"
    from gateway.protocol.sessions import REGISTRY

    ready = not drain.draining() and all(v == "ok" for v in checks.values())
    return {"status": "ready" if ready else "not ready", "draining": drain.draining(), **checks,
            "in_flight": drain.in_flight(), "sessions": len(REGISTRY.sessions),
            "upstreams": REGISTRY.upstream_counts()}


class Health:
    """GET /healthz and GET /readyz."""

    def __init__(self, ready: bool) -> None:
        self.ready = ready

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, 405, {"error": "use GET"})
            return
        if not self.ready:
            await _send(send, 200, {"status": "alive"})
            return
        body = await readiness()
        await _send(send, 200 if body["status"] == "ready" else 503, body)


async def _send(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
