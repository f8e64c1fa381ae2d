"""tools/call: admitted by the policy (gateway/calls/admission.py, one database hop), perhaps held for a person's
decision (holding.py), then refused with a reason the agent can act on, or forwarded as one ForwardedCall
(forwarded_call.py) whose audit row is settled exactly once. A stateless-era agent's call that a session-era
upstream may ask questions in runs as a bridged call (bridged_calls.py)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from django.db import DatabaseError
from django.utils import timezone
from mcp.shared.exceptions import MCPError

from gateway import calls, events
from gateway.calls import loop_database
from gateway.models import Call, Server
from gateway.protocol import held_tasks, input_bridge, jsonrpc
from gateway.protocol.bridged_calls import abort_parked, bridged_call, needs_own_link
from gateway.protocol.era import Era, tool_call_params
from gateway.protocol.exchange import Reply, Request, refusal_reply
from gateway.protocol.forwarded_call import ForwardedCall
from gateway.protocol.holding import hold
from gateway.protocol.hops import record_upstream_problem
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.sessions import AgentSession
from gateway.protocol.upstream_request import ask_upstream
from gateway.redaction import redact_text
from gateway.telemetry import metrics, tracing
from gateway.upstream.connect import UpstreamError
from gateway.upstream.link import UpstreamLink

log = logging.getLogger("portcullis.relay")


def _decide(token: str, server: Server, name: str, arguments: object, request_state: object,
            session: str = "", current_server: bool = False) -> calls.Admission:
    return calls.admit(token, server, name, arguments, timezone.now(), request_state, session, current_server)


async def admit(token: str, server: Server, name: str, arguments: object, request_state: object,
                session: str = "", current_server: bool = False) -> calls.Admission:
    """The policy's decision and the call's audit row, as one database task; without the database, nothing is
    forwarded. A task that found its connection lost runs again, whole, on a fresh one first (loop_postgres.py,
    dbthreads.py): so the database error is turned into a refusal here, outside the task."""
    try:
        return await loop_database.run(_decide, token, server, name, arguments, request_state, session,
                                       current_server)
    except DatabaseError as exc:  # the database is the audit log: nothing is forwarded without it
        log.error("tools/call refused, database unavailable: %s", redact_text(str(exc))[:500])
        return calls.Admission(None, False, f"audit log unavailable ({type(exc).__name__}): the gateway cannot "
                                            "reach its database, so the call was not forwarded; try again shortly")


STATELESS_SESSION = "stateless"


def session_key(session: AgentSession | None, era: Era) -> str:
    """What `scope: "session"` limits count per (docs/POLICY.md, "Scopes"): a session-era agent's session (a
    digest of its id: the id itself is the agent's to keep), or, in the stateless era, which has no sessions, one
    per grant."""
    if era is Era.STATELESS or session is None:
        return STATELESS_SESSION if era is Era.STATELESS else ""
    return hashlib.sha256(session.id.encode()).hexdigest()[:16]


async def tools_call(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink, era: Era,
                     session: AgentSession | None) -> Reply:
    started, timing = time.perf_counter(), _Timing()
    try:
        return await _tools_call(req, msg, server, link, era, session, timing)
    finally:
        own = time.perf_counter() - started - timing.upstream - timing.held
        metrics.GATEWAY_SECONDS.labels(server.slug).observe(max(own, 0.0))


class _Timing:
    """What of a tools/call's time was not the gateway's own: the upstream's answer, a person's decision."""

    __slots__ = ("upstream", "held")

    def __init__(self) -> None:
        self.upstream = self.held = 0.0


async def _tools_call(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink, era: Era,
                      session: AgentSession | None, timing: _Timing) -> Reply:
    name, arguments = msg.params.get("name"), msg.params.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise RpcError(jsonrpc.INVALID_PARAMS, "tools/call needs params.name (a string)")
    if not isinstance(arguments, dict):
        raise RpcError(jsonrpc.INVALID_PARAMS, "tools/call params.arguments must be a JSON object")
    # A stateless-era agent's retry of an input_required round carries the gateway's sealed requestState: a
    # continuation of the call it was given for (gateway/calls/continuations.py), admitted without a second
    # reservation.
    request_state = msg.params.get("requestState") if era is Era.STATELESS else None
    admission = await admit(req.token, server, name, arguments, request_state, session_key(session, era),
                            req.recent_server)
    if req.recent_server and admission.call_id is not None:  # its row was written: the copy was read current
        req.server_confirmed_at = time.monotonic()
    events.call_changed(admission.call_id, server.slug, "opened" if admission.forward or admission.held else "refused")
    if admission.held is not None and era is Era.STATELESS and held_tasks.declared(msg.params):
        # The agent follows the held call as a task: it gets the handle now; the gateway waits and runs it.
        return await held_tasks.start(req, msg, server, link, admission, name, arguments)
    if admission.held is not None:
        waited = time.perf_counter()
        with tracing.span("portcullis.approval_wait", **{"portcullis.approval": admission.held.public_id}):
            admission = await hold(req, msg, admission)
            tracing.note(**{"portcullis.approved": admission.forward})
        timing.held = time.perf_counter() - waited
        metrics.APPROVAL_WAIT.labels(server.slug, "approved" if admission.forward else "refused").observe(
            timing.held)
        events.call_changed(admission.call_id, server.slug, "opened" if admission.forward else "refused")
    parked_id = admission.continuation.parked_id if admission.continuation is not None else None
    if not admission.forward:
        if parked_id is not None:  # a genuine state the policy now refuses: its parked upstream call ends too
            await abort_parked(parked_id, admission.grant_id,
                               f"cancelled: the policy refused its continuation (call #{admission.call_id}): "
                               f"{admission.message}")
        return refusal_reply(msg, admission.message, era)
    call = ForwardedCall(admission, server, msg, era)
    if parked_id is not None or (era is Era.STATELESS and admission.continuation is None
                                 and needs_own_link(link, msg.params)):
        asked = time.perf_counter()
        try:
            return await bridged_call(msg, server, call, name, arguments, parked_id)
        finally:  # the upstream's time and the agent's own answers: none of it the gateway's
            timing.upstream = time.perf_counter() - asked
    return await _forward(req, msg, link, call, session, name, arguments, timing)


async def _forward(req: Request, msg: jsonrpc.Message, link: UpstreamLink, call: ForwardedCall,
                   session: AgentSession | None, name: str, arguments: dict, timing: _Timing) -> Reply:
    server, continuation = call.server, call.admission.continuation
    async with call:
        try:
            if session is not None and (task := asyncio.current_task()) is not None:
                session.inflight[msg.id] = task  # so notifications/cancelled from the agent can cancel it
            params = tool_call_params(msg.params, call.era,
                                      continuation.upstream_state if continuation is not None else None)
            asked = time.perf_counter()
            try:
                with tracing.upstream_span(server.slug, "tools/call", name,
                                           server.url if server.transport != Server.Transport.STDIO else None):
                    result = await ask_upstream(req, msg, link, call.era, tracing.with_context(params),
                                                server.timeout_seconds)
            finally:
                timing.upstream = time.perf_counter() - asked
                metrics.UPSTREAM_SECONDS.labels(server.slug).observe(timing.upstream)
            if call.era is Era.STATELESS and input_bridge.is_input_required(result):
                state = result.get("requestState")
                result = call.sealed(result, name, arguments, upstream_state=state if isinstance(state, str) else None)
            return call.answered(result)
        except input_bridge.BridgeFailure as exc:
            # The upstream began the call and could not finish it: its reservation is kept, like a tool error.
            call.record(Call.Outcome.TOOL_ERROR, f"input_required not completed: {exc}")
            return refusal_reply(msg, str(exc), call.era)
        except MCPError as exc:
            reply = call.failed(exc)
            if call.outcome == Call.Outcome.INTERRUPTED:
                await record_upstream_problem(server, link.death_report())
            return reply
        except UpstreamError as exc:
            return call.unreachable(exc)
        finally:
            if session is not None:
                session.inflight.pop(msg.id, None)
