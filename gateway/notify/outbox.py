"""Events into deliveries: one NotificationDelivery row per enabled channel that wants the event (its kind, its
servers, its minimum risk). Called after the event's own transaction committed; a failure here is logged and never
reaches the call or the person that caused the event."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from gateway.models import Approval, NotificationChannel, NotificationDelivery, Server, Tool
from gateway.policy.document import RISK_LEVELS

log = logging.getLogger("portcullis.notify")

# Set when a delivery is queued: this process's sender wakes at once (others poll).
queued = threading.Event()


def _channels(event: str, server: Server | None):
    channels = NotificationChannel.objects.filter(enabled=True).prefetch_related("servers")
    if server is not None:
        channels = channels.filter(Q(servers__isnull=True) | Q(servers=server)).distinct()
    return [c for c in channels if event in c.events]


def _at_least(level: str, minimum: str) -> bool:
    if not minimum:
        return True
    if level not in RISK_LEVELS:
        return True  # unknown: tell rather than stay silent
    return RISK_LEVELS.index(level) >= RISK_LEVELS.index(minimum)


def link(path: str) -> str:
    return settings.PORTCULLIS_PUBLIC_URL + path


def _queue(event: str, server: Server | None, subject: str, path: str, payload: dict, level: str = "") -> int:
    count = 0
    for channel in _channels(event, server):
        if event == NotificationChannel.Event.APPROVAL_PENDING and not _at_least(level, channel.min_risk):
            continue
        NotificationDelivery.objects.create(channel=channel, event=event, subject=subject[:300],
                                            link=link(path)[:500], payload=payload)
        count += 1
    if count:
        queued.set()
    return count


def after_commit(func, *args) -> None:
    """Queue once the caller's transaction commits (at once outside one); never raises."""
    def run() -> None:
        try:
            func(*args)
        except Exception:  # a notification must never fail what caused it
            log.exception("notification not queued")
    transaction.on_commit(run)


def approval_pending(approval: Approval) -> int:
    tool = approval.tool
    level = tool.risk_level if tool is not None else ""
    category = tool.risk_category if tool is not None else ""
    subject = f"Approval needed: {approval.tool_name} on {approval.server.slug} (grant {approval.grant.name})"
    payload = {"event": "approval.pending", "approval": approval.public_id, "server": approval.server.slug,
               "tool": approval.tool_name, "grant": approval.grant.name, "risk": {"category": category,
                                                                                  "level": level},
               "why": approval.why or "the policy asks a person to approve this tool",
               "approvers_needed": approval.approvers_needed,
               "expires_at": approval.expires_at.isoformat(), "created_at": approval.created_at.isoformat()}
    path = f"/approvals/#approval-{approval.public_id}"
    payload["url"] = link(path)
    return _queue(NotificationChannel.Event.APPROVAL_PENDING, approval.server, subject, path, payload, level)


def tool_held(server: Server, names: list[str]) -> int:
    if not names:
        return 0
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    subject = f"Tool review needed on {server.slug}: {shown}"
    payload = {"event": "tool.held", "server": server.slug, "tools": names[:100],
               "why": "the tool's definition changed since it was approved, or it is new; agents cannot call it "
                      "until a person reviews it"}
    path = "/approvals/#tools-waiting"
    payload["url"] = link(path)
    return _queue(NotificationChannel.Event.TOOL_HELD, server, subject, path, payload)


def upstream_down(server: Server, report: str) -> int:
    subject = f"Upstream down: {server.slug} ({server.name})"
    payload = {"event": "upstream.down", "server": server.slug, "error": report[:500]}
    path = f"/servers/{server.slug}/"
    payload["url"] = link(path)
    return _queue(NotificationChannel.Event.UPSTREAM_DOWN, server, subject, path, payload)


def newly_held(server: Server, before: set[str]) -> list[str]:
    now = set(Tool.objects.filter(server=server).exclude(held_reason="").values_list("name", flat=True))
    return sorted(now - before)
