"""resources/read, prompts/get and completion/complete under the policy, and the listings of resources, templates
and prompts filtered by it (the database half: gateway/calls/reads.py).

A refused read is a JSON-RPC error (POLICY_DENIED) whose message says why; an allowed one is audited before it is
forwarded and settled with its outcome, like a tool call.
"""

from __future__ import annotations

import asyncio
import time

from django.utils import timezone
from mcp.shared.exceptions import MCPError
from mcp_types import REQUEST_TIMEOUT

from gateway import events
from gateway.calls import audit, dbthreads
from gateway.calls.reads import admit_read, readable, settle_read
from gateway.models import Call, Server
from gateway.protocol import input_bridge, jsonrpc
from gateway.protocol.era import Era, upstream_params
from gateway.protocol.exchange import Reply, Request, ok_reply
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.upstream_request import ask_upstream
from gateway.upstream.connect import UpstreamError
from gateway.upstream.link import UpstreamLink

GOVERNED = frozenset({"resources/read", "resources/subscribe", "prompts/get", "completion/complete"})
# listing method → (policy section, the result's list, the field that names an item)
LISTINGS = {"resources/list": ("resources", "resources", "uri"),
            "resources/templates/list": ("resources", "resourceTemplates", "uriTemplate"),
            "prompts/list": ("prompts", "prompts", "name")}


def read_target(method: str, params: dict) -> tuple[str, str]:
    """(policy section, URI or prompt name) a governed request reads; completion/complete is governed by the
    prompt or resource template it completes for."""
    if method in ("resources/read", "resources/subscribe"):
        kind, name = "resources", params.get("uri")
    elif method == "prompts/get":
        kind, name = "prompts", params.get("name")
    else:
        ref = params.get("ref") if isinstance(params.get("ref"), dict) else {}
        kind, name = {"ref/prompt": ("prompts", ref.get("name")),
                      "ref/resource": ("resources", ref.get("uri"))}.get(ref.get("type"), ("", None))
    if not isinstance(name, str) or not name:
        raise RpcError(jsonrpc.INVALID_PARAMS, f"{method} needs the URI or prompt name it is for")
    return kind, name


async def governed_read(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink, era: Era) -> Reply:
    kind, name = read_target(msg.method, msg.params)
    params = upstream_params(msg.params)
    stored = {k: v for k, v in params.items() if k != "_meta"}
    try:
        admission = await dbthreads.run(admit_read, req.token, server, msg.method, kind, name, stored,
                                        timezone.now())
    except audit.AuditUnavailable:
        raise RpcError(jsonrpc.GATEWAY_UNAVAILABLE, "audit log unavailable: the gateway cannot reach its database, "
                                                    "so nothing was forwarded; try again shortly") from None
    events.call_changed(admission.call_id, server.slug, "opened" if admission.allowed else "refused")
    if not admission.allowed:
        raise RpcError(jsonrpc.POLICY_DENIED, admission.message)
    started, outcome, error, size = time.perf_counter(), Call.Outcome.INTERRUPTED, "gateway error", None
    try:
        result = await ask_upstream(req, msg, link, era, params, server.timeout_seconds)
        outcome, error, size = Call.Outcome.OK, "", len(jsonrpc.dumps(result))
        return ok_reply(msg, result, era)
    except input_bridge.BridgeFailure as exc:
        outcome, error = Call.Outcome.PROTOCOL_ERROR, str(exc)
        raise RpcError(jsonrpc.INTERNAL_ERROR, str(exc)) from None
    except MCPError as exc:
        outcome = Call.Outcome.TIMEOUT if exc.code == REQUEST_TIMEOUT else Call.Outcome.PROTOCOL_ERROR
        error = f"{exc.code}: {exc.message}"
        raise RpcError(exc.code, exc.message, exc.error.data) from None
    except UpstreamError as exc:
        error = str(exc)
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    except asyncio.CancelledError as exc:
        error = str(exc.args[0]) if exc.args else "cancelled by the agent or its disconnect"
        raise
    finally:
        await dbthreads.run(settle_read, admission.call_id, outcome=outcome, result_size=size, error=error,
                            latency_ms=(time.perf_counter() - started) * 1000, now=timezone.now())
        events.call_changed(admission.call_id, server.slug, "settled")


async def filtered_listing(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink,
                           era: Era) -> Reply:
    """A listing of resources, templates or prompts, with only what the grant's policy lets it read."""
    kind, key, field = LISTINGS[msg.method]
    try:
        result = await ask_upstream(req, msg, link, era, upstream_params(msg.params), server.timeout_seconds)
    except MCPError as exc:
        raise RpcError(exc.code, exc.message, exc.error.data) from None
    except UpstreamError as exc:
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    items = result.get(key)
    if not isinstance(items, list):
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, f"upstream {server.slug!r} sent a {msg.method} without {key}")
    names = [item.get(field) for item in items if isinstance(item, dict) and isinstance(item.get(field), str)]
    allowed = await dbthreads.run(readable, req.token, server, kind, names, timezone.now())
    shown = [item for item in items if isinstance(item, dict) and item.get(field) in allowed]
    return ok_reply(msg, {**result, key: shown}, era)
