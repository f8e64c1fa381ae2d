"""Live events for the dashboard, published on the channel layer (Redis across processes when REDIS_URL is set).

Publishing never slows or fails a call: events are queued and sent, in order, by one task per event loop that runs
while there is something to send (a task per event cost the hot path more than the send); a failure is only logged.
The events of calls written within FLUSH_S of each other go in one message ("calls.changed", a list of
[call id, server, stage]): on Redis a group send costs the gateway ~0.2 ms of CPU with nobody watching and ~0.6 ms
with a dashboard open, so one message per event (two per call) cost more than the rest of the call. A dashboard
hears of a call at most FLUSH_S later.
"""

from __future__ import annotations

import asyncio
import logging

from channels.layers import get_channel_layer

log = logging.getLogger("portcullis.events")

CALLS_GROUP = "portcullis.calls"
REVIEWS_GROUP = "portcullis.reviews"  # tools held for a person's review (gateway/catalogue/sync.py)
MAX_PENDING = 1000  # if the layer is slower than the calls, drop events rather than pile them up
FLUSH_S = 0.05
_queue: list[list] = []
_sender: asyncio.Task | None = None


def call_changed(call_id: int | None, server: str, stage: str) -> None:
    """A Call row was written (stage "opened" or "refused") or settled ("settled"): tell the live log."""
    global _sender
    if call_id is None or len(_queue) >= MAX_PENDING:
        return
    _queue.append([call_id, server, stage])
    if _sender is None or _sender.done() or _sender.get_loop() is not asyncio.get_running_loop():
        _sender = asyncio.create_task(_send_queued())


async def _send_queued() -> None:
    while _queue:
        await asyncio.sleep(FLUSH_S)  # the events of the calls written meanwhile go in the same message
        batch = _queue.copy()
        _queue.clear()
        await _send({"type": "calls.changed", "calls": batch})


async def _send(event: dict) -> None:
    try:
        layer = get_channel_layer()
        if layer is not None:
            await layer.group_send(CALLS_GROUP, event)
    except Exception as exc:  # the live log is a convenience; the audit row is the record
        log.warning("live event not published: %s", exc)


def reviews_changed() -> None:
    """A tool was held for a person's review (or let go): tell the dashboards, from synchronous code, once the
    transaction that held it commits. Never raises: the approvals page lists held tools on every load anyway."""
    from django.db import transaction

    transaction.on_commit(_publish_reviews)


def _publish_reviews() -> None:
    from asgiref.sync import async_to_sync

    try:
        async_to_sync(_send_to)(REVIEWS_GROUP, {"type": "review.changed"})
    except Exception as exc:  # an event loop runs in this thread, or the layer is down
        log.warning("review event not published: %s", exc)


async def _send_to(group: str, event: dict) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, event)
