"""Live events for the dashboard, published on the channel layer (Redis across processes when REDIS_URL is set).

Publishing never slows or fails a call: it is a fire-and-forget task whose failure is only logged.
"""

from __future__ import annotations

import asyncio
import logging

from channels.layers import get_channel_layer

log = logging.getLogger("portcullis.events")

CALLS_GROUP = "portcullis.calls"
REVIEWS_GROUP = "portcullis.reviews"  # tools held for a person's review (gateway/catalogue/sync.py)
_pending: set[asyncio.Task] = set()  # strong references until each send finishes
MAX_PENDING = 1000  # if the layer is slower than the calls, drop events rather than pile up tasks


def call_changed(call_id: int | None, server: str, stage: str) -> None:
    """A Call row was written (stage "opened" or "refused") or settled ("settled"): tell the live log."""
    if call_id is None or len(_pending) >= MAX_PENDING:
        return
    task = asyncio.create_task(_send({"type": "call.changed", "call_id": call_id, "server": server,
                                      "stage": stage}))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


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
