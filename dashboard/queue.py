"""The approvals queue as people see it: what waits, what was decided, and what one card shows.

One card partial (templates/dashboard/approvals/_card.html) serves the first paint, the htmx answer to a
decision and the websocket push; card() is the one place its context is built.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet
from django.db.models.functions import Coalesce

from dashboard.rule_links import rule_link
from gateway.calls.approvals import MINUTES_CHOICES, agent_waiting
from gateway.catalogue.review import held_for_review
from gateway.models import Approval
from gateway.tool_definitions import CHANGED_HELD, NEW_HELD

HISTORY_SIZE = 50  # decided approvals listed under the queue; each one's call stays in the call log
PENDING_LIST = "approvals-pending"  # element ids on the queue page; a card names the list it belongs in
HISTORY_LIST = "approvals-history"

STATE_TEXT = {"pending": "waiting", "stopped": "agent stopped waiting", "approved": "approved",
              "denied": "denied", "expired": "expired", "used": "approved · call ran"}
STATE_ICON = {"approved": "allow", "used": "allow", "denied": "deny", "expired": "expired"}


def approvals() -> QuerySet[Approval]:
    return Approval.objects.select_related("grant", "server", "tool", "policy_version", "decided_by",
                                           "first_approved_by").annotate(
        agent_waiting=agent_waiting())


def waiting(now: datetime) -> QuerySet[Approval]:
    return approvals().filter(state=Approval.State.PENDING, expires_at__gt=now).order_by("-created_at")


def history(now: datetime) -> QuerySet[Approval]:
    # A pending approval past its expiry is history too, even before expire_overdue() has marked it.
    decided = ~Q(state=Approval.State.PENDING) | Q(expires_at__lte=now)
    return approvals().filter(decided).order_by(Coalesce("decided_at", "expires_at").desc(), "-pk")[:HISTORY_SIZE]


def clock(seconds: int) -> str:
    """Time left as the countdown shows it: 4:05, 1:02:03."""
    hours, rest = divmod(max(0, seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def card(approval: Approval, now: datetime, error: str = "", confirm_always: bool = False, reason: str = "") -> dict:
    is_waiting = approval.state == Approval.State.PENDING and approval.expires_at > now
    state = approval.state if is_waiting or approval.state != Approval.State.PENDING else "expired"
    held = getattr(approval, "agent_waiting", None)
    if held is None:  # a card built from a plain row (the answer to a decision)
        held = approval.calls.filter(outcome="pending").exists()
    if is_waiting and not held:
        state = "stopped"  # the agent was told to call again; approving lets that identical call run once
    seconds = int((approval.expires_at - now).total_seconds()) if is_waiting else 0
    tool = approval.tool
    return {
        "approval": approval, "waiting": is_waiting, "agent_waiting": is_waiting and held, "state": state,
        "state_text": STATE_TEXT[state], "state_icon": STATE_ICON.get(state, ""),
        "seconds_left": seconds, "time_left": clock(seconds), "error": error,
        "rule_link": rule_link(approval.rule, approval.server.slug),
        "into": PENDING_LIST if is_waiting else HISTORY_LIST,
        # The call is released only while the tool is unchanged; say so before someone approves in vain.
        "tool_changed": tool is not None and tool.definition_hash != approval.tool_hash,
        # "Approve & always allow" was pressed: the card asks before it also writes the grant's rule.
        "confirm_always": confirm_always and is_waiting, "reason": reason,
        # Two-person approval: who approved first, while a second, different person's approval is awaited.
        "first_approver": approval.first_approved_by.get_username() if approval.first_approved_by else "",
        "minutes_choices": MINUTES_CHOICES,
    }


TOOL_REVIEW_TEXT = {CHANGED_HELD: "definition changed since it was approved", NEW_HELD: "new on an established server"}


def tool_reviews() -> list[dict]:
    """Tools held for a person's review (refused until approved), for the approvals page and its live updates."""
    rows = []
    for tool in held_for_review()[:200]:
        what = TOOL_REVIEW_TEXT.get(tool.held_reason) or (
            f"an action of {tool.via.name} first seen in a call" if tool.via_id else tool.held_reason)
        rows.append({"tool": tool, "what": what, "changed": tool.held_reason == CHANGED_HELD})
    return rows
