"""The live events of calls (gateway/events.py) are sent in batches: the events of calls written within FLUSH_S of
each other share one channel-layer message, in the order they happened. On Redis a group send costs the gateway
~0.2 ms of CPU with nobody watching and ~0.6 ms with one dashboard open, so one message per event (two per call)
cost a team's gateway more than the rest of the call. Nothing is lost: every event is in a message."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from gateway import events

pytestmark = pytest.mark.asyncio

WAIT_S = 5


async def listening():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.CALLS_GROUP, channel)
    return layer, channel


async def messages_until(layer, channel, count: int) -> list[dict]:
    """Messages received until `count` call events have arrived; then nothing more within twice the window."""
    received, seen = [], 0
    while seen < count:
        message = await asyncio.wait_for(layer.receive(channel), WAIT_S)
        received.append(message)
        seen += len(message["calls"])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 2 * events.FLUSH_S)
    return received


async def test_events_written_together_share_one_message_in_order():
    layer, channel = await listening()
    for call_id, stage in ((7, "opened"), (8, "refused"), (7, "settled")):
        events.call_changed(call_id, "nas", stage)
    received = await messages_until(layer, channel, 3)
    assert received == [{"type": "calls.changed", "calls": [[7, "nas", "opened"], [8, "nas", "refused"],
                                                            [7, "nas", "settled"]]}]
    await layer.group_discard(events.CALLS_GROUP, channel)


async def test_events_of_calls_one_after_another_within_the_window_share_a_message():
    """As at concurrency 1: a call every few milliseconds."""
    layer, channel = await listening()
    for call_id in range(1, 5):
        events.call_changed(call_id, "nas", "opened")
        await asyncio.sleep(events.FLUSH_S / 10)
        events.call_changed(call_id, "nas", "settled")
    received = await messages_until(layer, channel, 8)
    assert [event for message in received for event in message["calls"]] == [
        [i, "nas", stage] for i in range(1, 5) for stage in ("opened", "settled")]
    assert len(received) < 8
    await layer.group_discard(events.CALLS_GROUP, channel)


async def test_a_call_without_a_row_publishes_nothing():
    layer, channel = await listening()
    events.call_changed(None, "nas", "refused")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 3 * events.FLUSH_S)
    await layer.group_discard(events.CALLS_GROUP, channel)
