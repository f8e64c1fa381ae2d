"""Human approval of held calls: bind an approval to the exact call, decide it, and claim it exactly once.

An approval is bound to grant, server, tool, the hash of the canonical arguments, the policy version and the
tool's definition hash; it is void if the policy or the tool changed since. Only a person deciding through the
dashboard (decide()) approves: nothing an agent sends can. State moves with conditional updates, so two
identical concurrent calls cannot both use one approval, and two people cannot both decide one.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from gateway import policies
from gateway.models import Approval, Call, Grant, Server, Tool
from gateway.notify import outbox

log = logging.getLogger("portcullis.approvals")

APPROVALS_GROUP = "portcullis.approvals"


class ApprovalError(ValueError):
    """A decision that cannot be taken; the message says why, for the person who tried."""


class TooManyPending(Exception):
    """The grant already has PORTCULLIS_PENDING_APPROVALS_PER_GRANT approvals waiting; the message is the agent's."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"too many approvals pending for this grant ({cap}): wait for an operator to decide, "
                         "or ask one to clear the queue")


@dataclass(frozen=True)
class Binding:
    grant: Grant
    server: Server
    tool: Tool
    argument_hash: str
    arguments: dict  # redacted
    policy_version_id: int | None
    rule: str
    why: str = ""  # why it is held, when not just an approve rule (a limit reached)
    approvers: int = 1


MINUTES_CHOICES = (15, 60, 240)  # "these exact arguments for the next N minutes"


def _binding_filter(b: Binding) -> Q:
    return Q(grant=b.grant, server=b.server, tool_name=b.tool.name, argument_hash=b.argument_hash)


def _still_valid(approval: Approval, b: Binding) -> bool:
    return approval.policy_version_id == b.policy_version_id and approval.tool_hash == b.tool.definition_hash


def claim_approved(b: Binding, now: datetime) -> Approval | None:
    """An approved, still-valid approval for exactly this call: one for this call once, marked used (exactly once),
    or one for these exact arguments until a time, which stays approved until then. None if there is none."""
    candidates = Approval.objects.filter(_binding_filter(b), state=Approval.State.APPROVED, expires_at__gt=now)
    for approval in candidates.select_related("decided_by", "first_approved_by").order_by("decided_at"):
        if not _still_valid(approval, b):
            void(approval, "the policy or the tool's definition changed since it was approved", now)
            continue
        if approval.approved_until is not None:
            if approval.approved_until > now:
                return approval
            continue
        if Approval.objects.filter(pk=approval.pk, state=Approval.State.APPROVED).update(
                state=Approval.State.USED):
            approval.state = Approval.State.USED
            return approval
    return None


def take(approval: Approval, now: datetime) -> bool:
    """A held call's approval was given: take it for this call. Once: exactly one call takes it (a conditional
    update); for N minutes: it must still be in its time."""
    if Approval.objects.filter(pk=approval.pk, state=Approval.State.APPROVED, approved_until__gt=now).exists():
        return True
    return bool(Approval.objects.filter(pk=approval.pk, state=Approval.State.APPROVED,
                                        approved_until__isnull=True).update(state=Approval.State.USED))


def approved_text(approval_id: int) -> str:
    """What the audit row of a call that ran on an approval says: who approved it."""
    approval = Approval.objects.select_related("decided_by", "first_approved_by").get(pk=approval_id)
    until = (f", for identical calls until {approval.approved_until:%H:%M} UTC" if approval.approved_until
             else "")
    return f"approved by {approval.approvers_text or 'an operator'} (approval {approval.public_id}{until})"


def pending_for(b: Binding, now: datetime) -> Approval:
    """The pending approval for exactly this call: the existing one (identical calls wait together) or new. The
    caller announces it (`publish`) once the held call's audit row is written: the dashboards render the queue on
    that event, and before the row they would show nobody waiting on it.

    Raises TooManyPending when a new one would put more than PORTCULLIS_PENDING_APPROVALS_PER_GRANT approvals of
    the grant in the queue. One transaction holding the grant's row (SQLite: the write lock taken at BEGIN), so
    concurrent calls of one grant count and create one at a time and the cap is exact."""
    with transaction.atomic():
        list(Grant.objects.select_for_update().filter(pk=b.grant.pk).values_list("pk"))
        existing = Approval.objects.filter(_binding_filter(b), state=Approval.State.PENDING, expires_at__gt=now)
        for approval in existing.order_by("created_at"):
            if _still_valid(approval, b):
                return approval
            void(approval, "the policy or the tool's definition changed while it waited", now)
        cap = settings.PORTCULLIS_PENDING_APPROVALS_PER_GRANT
        if Approval.objects.filter(grant=b.grant, state=Approval.State.PENDING, expires_at__gt=now).count() >= cap:
            raise TooManyPending(cap)
        approval = Approval.objects.create(
            public_id=secrets.token_hex(8), grant=b.grant, server=b.server, tool=b.tool, tool_name=b.tool.name,
            argument_hash=b.argument_hash, arguments=b.arguments, policy_version_id=b.policy_version_id,
            tool_hash=b.tool.definition_hash, rule=b.rule, created_at=now, why=b.why,
            approvers_needed=max(1, b.approvers),
            expires_at=now + timedelta(seconds=settings.PORTCULLIS_APPROVAL_TTL_S))
        outbox.after_commit(outbox.approval_pending, approval)  # people who are not looking are told
    return approval


def void(approval: Approval, why: str, now: datetime) -> None:
    if Approval.objects.filter(pk=approval.pk, state__in=[Approval.State.PENDING, Approval.State.APPROVED]).update(
            state=Approval.State.EXPIRED, reason=f"void: {why}", decided_at=now):
        approval.refresh_from_db()
        transaction.on_commit(lambda: publish(approval))  # inside pending_for's transaction: once it commits


def expire_overdue(now: datetime) -> int:
    count = Approval.objects.filter(state=Approval.State.PENDING, expires_at__lte=now).update(
        state=Approval.State.EXPIRED, reason="expired: nobody decided in time", decided_at=now)
    return count


def decide(approval: Approval, *, user, approve: bool, reason: str = "", always: bool = False,
           minutes: int | None = None, now: datetime) -> Approval:
    """A signed-in person's decision. `minutes` approves every identical call (same grant, tool and arguments) for
    that long; `always` also allows this tool for this grant from now on, as a new version of the grant's own
    policy (visible in the history). An approval that needs two people waits after the first one's ("1 of 2"):
    only a different person's approval completes it; either may deny."""
    if user is None or not getattr(user, "is_authenticated", False):
        raise ApprovalError("only a signed-in person can decide an approval")
    if approval.expires_at <= now:
        expire_overdue(now)
        raise ApprovalError(f"approval {approval.public_id} has expired; the agent must call again")
    if not approve and not reason.strip():
        raise ApprovalError("say why the call is denied: the agent reads the reason")
    if minutes is not None and minutes not in MINUTES_CHOICES:
        raise ApprovalError(f"choose {', '.join(map(str, MINUTES_CHOICES))} minutes")
    with transaction.atomic():
        if approve and approval.approvers_needed > 1:
            current = Approval.objects.select_for_update().get(pk=approval.pk)
            if current.state == Approval.State.PENDING and current.first_approved_by_id is None:
                Approval.objects.filter(pk=approval.pk, state=Approval.State.PENDING,
                                        first_approved_by__isnull=True).update(first_approved_by=user,
                                                                                first_approved_at=now)
                approval.refresh_from_db()
                transaction.on_commit(lambda: publish(approval))
                return approval
            if current.state == Approval.State.PENDING and current.first_approved_by_id == user.pk:
                raise ApprovalError("you already approved this call: a second, different person must approve it")
        state = Approval.State.APPROVED if approve else Approval.State.DENIED
        fields = {"state": state, "decided_by": user, "decided_at": now, "reason": reason.strip()[:2000]}
        if approve and minutes is not None:
            fields["approved_until"] = now + timedelta(minutes=minutes)
            fields["expires_at"] = fields["approved_until"]
        updated = Approval.objects.filter(pk=approval.pk, state=Approval.State.PENDING).update(**fields)
        if not updated:
            approval.refresh_from_db()
            raise ApprovalError(f"approval {approval.public_id} was already {approval.state}")
        if approve and always:
            allow_from_now_on(approval, user)
    approval.refresh_from_db()
    publish(approval)
    return approval


def allow_from_now_on(approval: Approval, user) -> None:
    """Write a new version of the grant's own policy for the server in which this tool is allowed."""
    base = policies.applicable(approval.server, approval.grant)
    document = dict(base.document) if base else {"version": "1", "default": "deny"}
    tools = dict(document.get("tools", {}))
    rule = {k: v for k, v in tools.get(approval.tool_name, {}).items() if k != "action"}
    tools[approval.tool_name] = rule
    document["tools"] = tools
    policies.apply(approval.server, document, grant=approval.grant, user=user,
                   summary_prefix=f"approved {approval.tool_name} for {approval.grant.name} from now on: ")


def agent_waiting() -> Exists:
    """Whether an agent's call is held on the approval now (its audit row is pending while it waits)."""
    return Exists(Call.objects.filter(approval=OuterRef("pk"), outcome=Call.Outcome.PENDING))


def pending_count(now: datetime) -> int:
    """Approvals an agent is waiting on: the navigation badge. One the agent stopped waiting for (it was told to
    call again) can still be decided in the queue, but nobody is held by it."""
    return Approval.objects.filter(agent_waiting(), state=Approval.State.PENDING, expires_at__gt=now).count()


async def announce(approval: Approval) -> None:
    """Tell the dashboards and the held call (any process, through the channel layer). Never raises: waiting calls
    also poll the database and a card is right again on the next page load, so a lost event only costs latency."""
    from channels.layers import get_channel_layer

    event = {"type": "approval.changed", "approval_id": approval.pk, "public_id": approval.public_id,
             "state": approval.state}
    try:
        layer = get_channel_layer()
        if layer is not None:
            await layer.group_send(APPROVALS_GROUP, event)
    except Exception as exc:
        log.warning("approval event not published: %s", exc)


def publish(approval: Approval) -> None:
    """announce() from synchronous code. Never raises (not even where an event loop already runs this thread)."""
    try:
        async_to_sync(announce)(approval)
    except Exception as exc:
        log.warning("approval event not published: %s", exc)
