"""Health probes for load balancers and orchestrators, answered before Django (no session, no sign-in, no Host
check: a balancer probes by address).

- `/healthz`: the process answers. Nothing else is touched (no database, no upstream): a process busy starting
  upstream processes is alive.
- `/readyz`: should this process get new work? Not while draining (SIGTERM); not while the database or the channel
  layer (Redis, across processes: approvals and answers travel on it) cannot be reached. Upstreams are reported
  (how many connections per server are up) but never fail readiness: a down upstream is the same on every replica,
  and starting one must not take a replica out of rotation. The checks are cached for one second, so probing every
  second from several balancers costs one database round trip per second.
"""

from __future__ import annotations

import asyncio
import json
import time

from channels.layers import get_channel_layer
from django.db import connection

from gateway.calls import dbthreads
from gateway.edge import drain

CACHE_S = 1.0
CHECK_TIMEOUT_S = 2.0
_cached: tuple[float, dict] | None = None
_lock = asyncio.Lock()


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    channel = await layer.new_channel("portcullis.ready.")
    await layer.send(channel, {"type": "ready.probe"})
    await layer.receive(channel)


async def _check(name: str, probe) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
        return "ok"
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - the kind of failure only: no addresses or secrets
        return f"unavailable ({type(exc).__name__})"


async def readiness() -> dict:
    global _cached
    async with _lock:
        now = time.monotonic()
        if _cached is None or now - _cached[0] >= CACHE_S:
            database, layer = await asyncio.gather(_check("database", dbthreads.run(_database)),
                                                   _check("channel layer", _channel_layer()))
            _cached = (now, {"database": database, "channel_layer": layer})
        checks = dict(_cached[1])
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
