"""Holding a call until a person decides: the agent's request stays open for the hold window.

While held, the agent gets progress notifications (when it gave a progress token) or SSE keep-alives. The
decision arrives as a channel-layer event (Redis across processes) and, in case an event is lost or the
layer does not cross processes, from a database poll. Approved → the call is released (counters reserved,
the approval taken exactly once) and forwarded like any call; denied → the approver's reason; no decision
in time → the agent is told to call again once a person approved.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from gateway import calls
from gateway.calls import approvals, dbthreads
from gateway.calls.approvals import APPROVALS_GROUP
from gateway.models import Approval
from gateway.protocol.streams import KEEPALIVE_MESSAGE

log = logging.getLogger("portcullis.holding")

NOT_DECIDED = "not-decided"  # Admission.refusal of a held call nobody decided (in the hold, or before expiry)
POLL_S = 0.5  # database check between events: bounds the decision latency when events cannot arrive
PROGRESS_EVERY_S = 5  # progress notification interval for agents that asked for progress
KEEPALIVE_EVERY_S = 15  # SSE comment interval otherwise


def _state(approval_id: int) -> tuple[str, str, str]:
    row = Approval.objects.select_related("decided_by").get(pk=approval_id)
    who = row.decided_by.get_username() if row.decided_by else ""
    if row.state == Approval.State.PENDING and row.expires_at <= timezone.now():
        return Approval.State.EXPIRED, "expired: nobody decided in time", ""  # before the housekeeping marks it
    return row.state, row.reason, who


_read_state = dbthreads.hop(_state)
_release = dbthreads.hop(calls.release)
_refuse = dbthreads.hop(calls.refuse_held)


def pending_text(approval: Approval) -> str:
    return (f"approval pending (id {approval.public_id[:8]}…): ask an operator to approve, "
            "then call again with the same arguments")


async def hold(req, msg, admission: calls.Admission, window_s: float | None = None) -> calls.Admission:
    """Wait for the decision: PORTCULLIS_APPROVAL_HOLD_S in an agent's request, or `window_s` (a held call the
    gateway follows as a task waits until its approval expires)."""
    approval = admission.held
    deadline = time.monotonic() + (window_s if window_s is not None else settings.PORTCULLIS_APPROVAL_HOLD_S)
    signals = _Signals(req, msg, approval)
    waiter = await _Waiter.open(approval.pk)
    try:
        while True:
            try:
                state, reason, who = await _read_state(approval.pk)
            except DatabaseError as exc:  # a lost connection heals on the next poll; the hold window still applies
                log.warning("reading approval %s failed, polling again: %s", approval.pk, exc)
                state, reason, who = Approval.State.PENDING, "", ""
            outcome = await _settle_state(admission, approval, state, reason, who)
            if outcome is not None:
                return outcome
            left = deadline - time.monotonic()
            if left <= 0:
                text = pending_text(approval)
                await _refuse(admission, "approval", text, timezone.now())
                await approvals.announce(approval)  # its card says the agent stopped waiting; the badge drops it
                return calls.Admission(admission.call_id, False, text, grant_id=admission.grant_id,
                                       refusal=NOT_DECIDED)
            await waiter.wait(min(POLL_S, left))
            await signals.tick()
    finally:
        await waiter.close()


async def _settle_state(admission, approval: Approval, state: str, reason: str, who: str):
    if state == Approval.State.APPROVED:
        return await _release(admission, timezone.now())
    if state == Approval.State.PENDING:
        return None
    if state == Approval.State.DENIED:
        text = f"denied by an operator ({who}): {reason}" if who else f"denied by an operator: {reason}"
    elif state == Approval.State.USED:
        text = (f"approval {approval.public_id[:8]}… was used by an identical call; "
                "call again to ask for a new approval")
    else:
        text = f"approval {approval.public_id[:8]}… {reason or 'expired'}: call again to ask for a new one"
        await _refuse(admission, "approval", text, timezone.now())
        return calls.Admission(admission.call_id, False, text, grant_id=admission.grant_id, refusal=NOT_DECIDED)
    await _refuse(admission, "approval", text, timezone.now())
    return calls.Admission(admission.call_id, False, text, grant_id=admission.grant_id)


class _Signals:
    """What the agent hears while it waits: progress if it asked for it, else SSE keep-alives."""

    def __init__(self, req, msg, approval: Approval) -> None:
        meta = msg.params.get("_meta")
        self.token = meta.get("progressToken") if isinstance(meta, dict) else None
        self.channel, self.approval = req.channel, approval
        self.started = self.last = time.monotonic()

    async def tick(self) -> None:
        now = time.monotonic()
        every = PROGRESS_EVERY_S if self.token is not None else KEEPALIVE_EVERY_S
        if self.channel is None or now - self.last < every:
            return
        self.last = now
        if self.token is None:
            await self.channel.put(KEEPALIVE_MESSAGE)
            return
        window = settings.PORTCULLIS_APPROVAL_HOLD_S
        left = max(0, int(window - (now - self.started)))
        await self.channel.put({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
            "progressToken": self.token, "progress": round(now - self.started, 1), "total": window,
            "message": f"waiting for a person to approve {self.approval.public_id[:8]}… ({left} s left)"}})


class _Waiter:
    """Wakes the held call when an approval event for it arrives on the channel layer."""

    def __init__(self, approval_id: int) -> None:
        self.approval_id = approval_id
        self.layer = get_channel_layer()
        self.channel: str | None = None

    @classmethod
    async def open(cls, approval_id: int) -> _Waiter:
        waiter = cls(approval_id)
        try:
            waiter.channel = await waiter.layer.new_channel()
            await waiter.layer.group_add(APPROVALS_GROUP, waiter.channel)
        except Exception:  # no layer: the database poll alone decides, a little slower
            waiter.channel = None
        return waiter

    async def wait(self, timeout: float) -> None:
        if self.channel is None:
            await asyncio.sleep(timeout)
            return
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(self.layer.receive(self.channel), left)
            except Exception:  # a timeout, or a layer that failed: the caller polls the database next
                return
            if event.get("approval_id") == self.approval_id:
                return

    async def close(self) -> None:
        if self.channel is not None:
            try:
                await self.layer.group_discard(APPROVALS_GROUP, self.channel)
            except Exception:  # noqa: S110 - the group entry expires on its own
                pass
