"""Starting and ending a draft's run in shadow (gateway/calls/shadowing.py decides the live calls): one running per
server; saving the draft or dropping it ends it, with who and why."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from gateway import policies
from gateway.models import Call, Server, ShadowPolicy
from gateway.policy import parse_policy


@transaction.atomic
def start(server: Server, document: dict, user=None) -> ShadowPolicy:
    """Run this draft of the server's policy in shadow from the next call (a running one is replaced)."""
    parse_policy(document)  # PolicyInvalid: a draft that cannot decide anything is not shadowed
    end(server, f"replaced by a newer draft{' of ' + user.get_username() if user else ''}")
    active = policies.active_version(server)
    return ShadowPolicy.objects.create(server=server, document=policies.canonical(document), started_by=user,
                                       base_number=active.number if active else 0)


def running(server: Server) -> ShadowPolicy | None:
    return ShadowPolicy.objects.filter(server=server, ended_at__isnull=True).first()


def end(server: Server, reason: str) -> ShadowPolicy | None:
    shadow = running(server)
    if shadow is not None:
        shadow.ended_at, shadow.end_reason = timezone.now(), reason[:200]
        shadow.save(update_fields=["ended_at", "end_reason"])
    return shadow


def seen(shadow: ShadowPolicy) -> int:
    """Live calls of its server since it started (calls of grants with rules of their own included)."""
    calls = Call.objects.filter(server=shadow.server, created_at__gte=shadow.started_at)
    return (calls.filter(created_at__lt=shadow.ended_at) if shadow.ended_at else calls).count()
