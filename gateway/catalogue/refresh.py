"""Refresh a server's catalogue from the upstream itself: list every tool, sync, and record the server's health."""

from __future__ import annotations

import asyncio

from django.utils import timezone

from gateway.catalogue.sync import RefreshSummary, sync_tools
from gateway.models import Server
from gateway.redaction import redact_server_text
from gateway.upstream.connect import UpstreamError
from gateway.upstream.listing import fetch_tool_definitions


class RefreshFailed(Exception):
    """The upstream could not be listed; nothing in the catalogue changed. The message says why."""


def refresh(server: Server) -> RefreshSummary:
    """List the upstream and sync the catalogue; health and last error are recorded either way."""
    try:
        definitions = asyncio.run(fetch_tool_definitions(server))
    except UpstreamError as exc:
        text = redact_server_text(server, str(exc))  # the upstream layer masks them already: never rely on one place
        Server.objects.filter(pk=server.pk).update(health=Server.Health.ERROR, last_error=text[:4000])
        raise RefreshFailed(text) from None
    now = timezone.now()
    summary = sync_tools(server, definitions, now)
    Server.objects.filter(pk=server.pk).update(health=Server.Health.OK, last_error="", last_contact_at=now)
    return summary
