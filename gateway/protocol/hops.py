"""The protocol layer's database hops besides tools/call's own (gateway/calls/): authorising a request and
recording an upstream's problem. Each runs as one task on the database threads (gateway/calls/dbthreads.py),
whose connections heal after a database restart."""

from __future__ import annotations

from django.utils import timezone

from gateway.calls import dbthreads
from gateway.grants import authenticate
from gateway.models import Server
from gateway.notify import outbox
from gateway.protocol import jsonrpc
from gateway.protocol.jsonrpc import RpcError
from gateway.redaction import redact_server_text


def load_and_authorise(slug: str, token: str) -> tuple[Server, int]:
    """The server and the grant id for a request; raises AuthFailure (401/403) or RpcError (unknown/disabled)."""
    server = Server.objects.filter(slug=slug).first()
    if server is None:
        raise RpcError(jsonrpc.SESSION_NOT_FOUND, f"no MCP server {slug!r} on this gateway")
    grant = authenticate(token, server, timezone.now())  # also refuses a disabled server (403)
    server.env, server.headers  # noqa: B018 - decrypt now, in the sync world, so the link never touches the ORM
    return server, grant.pk


authorise = dbthreads.hop(load_and_authorise)


def _record_upstream_problem(server: Server, report: str) -> None:
    """A death or failure of the upstream, with the server's own secrets and anything secret-looking masked, on
    the server row the dashboard shows."""
    text = redact_server_text(server, report)[:4000]
    went_down = Server.objects.filter(pk=server.pk).exclude(health=Server.Health.ERROR).update(
        health=Server.Health.ERROR, last_error=text, last_contact_at=timezone.now())
    if went_down:  # people who are not looking are told, once per outage
        outbox.after_commit(outbox.upstream_down, server, text)
    else:
        Server.objects.filter(pk=server.pk).update(last_error=text, last_contact_at=timezone.now())


record_upstream_problem = dbthreads.hop(_record_upstream_problem)
