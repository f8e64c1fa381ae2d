"""The MCP side of the agent endpoint: which era, which session, and what each method does.

HTTP concerns (Host, Origin, sizes, content types) stay in gateway/edge/endpoint.py; this module takes one
parsed JSON-RPC message from an authenticated-looking request and returns one reply. Every request is
authorised against the database (a revoked grant stops on its next call); `tools/call` goes through
gateway/calls/admission.py; every other known method is relayed faithfully to the upstream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CONNECTION_CLOSED,
    PROTOCOL_VERSION_META_KEY,
    REQUEST_TIMEOUT,
    SERVER_INFO_META_KEY,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

from gateway import calls, events, tokens
from gateway.calls import audit, continuations, dbthreads
from gateway.catalogue.sync import definition_hash, sync_tools
from gateway.grants import AuthFailure, authenticate
from gateway.models import Call, Server, Tool
from gateway.policy import visibility
from gateway.protocol import input_bridge, jsonrpc, parked_calls
from gateway.protocol.holding import hold
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.sessions import REGISTRY, AgentSession
from gateway.protocol.streams import Channel
from gateway.redaction import redact_text
from gateway.upstream.connect import UpstreamError
from gateway.upstream.link import UpstreamLink, declarable

log = logging.getLogger("portcullis.relay")

GATEWAY_INFO = {"name": "portcullis", "title": "Portcullis MCP policy gateway", "version": "0.1.0"}

# Methods an agent may send; anything else is refused here and never reaches an upstream.
RELAYED_REQUESTS = frozenset({
    "resources/list", "resources/templates/list", "resources/read", "resources/subscribe",
    "resources/unsubscribe", "prompts/list", "prompts/get", "completion/complete", "logging/setLevel",
})
LOCAL_NOTIFICATIONS = frozenset({"notifications/initialized"})
RELAYED_NOTIFICATIONS = frozenset({"notifications/roots/list_changed", "notifications/progress"})
# The envelope keys of the agent's own era: the upstream link stamps its own.
ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION_META_KEY, "io.modelcontextprotocol/clientInfo",
                           "io.modelcontextprotocol/clientCapabilities"})


@dataclass
class Request:
    slug: str
    token: str
    headers: dict[str, str]
    session_id: str | None = None
    channel: Channel | None = None  # set when the agent accepts an SSE answer to this POST
    # Legacy HTTP+SSE transport: the stream's id becomes the session id and its channel the session's stream.
    sse_stream: tuple[str, Channel] | None = None


@dataclass
class Reply:
    status: int = 200
    body: dict | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def error_reply(err: RpcError, extra_headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(err.http_status, err.body(), extra_headers or [])


# --- database work, each in one thread hop ---

def _load_and_authorise(slug: str, token: str) -> tuple[Server, int]:
    server = Server.objects.filter(slug=slug).first()
    if server is None:
        raise RpcError(jsonrpc.SESSION_NOT_FOUND, f"no MCP server {slug!r} on this gateway")
    grant = authenticate(token, server, timezone.now())
    if not server.enabled:
        raise RpcError(jsonrpc.FORBIDDEN, f"server {slug!r} is disabled by an operator")
    server.env, server.headers  # noqa: B018 - decrypt now, in the sync world, so the link never touches the ORM
    return server, grant.pk


_authorise = dbthreads.hop(_load_and_authorise)


def _record_upstream_problem(server_id: int, report: str) -> None:
    """A death or failure of the upstream, redacted, on the server row the dashboard shows."""
    Server.objects.filter(pk=server_id).update(health=Server.Health.ERROR, last_error=redact_text(report)[:4000],
                                               last_contact_at=timezone.now())


_upstream_problem = dbthreads.hop(_record_upstream_problem)

# (server id, created) → {tool name: definition hash} last synced into the catalogue.
_KNOWN_HASHES: dict[tuple, dict[str, str]] = {}
# One catalogue sync at a time in this process: listings arrive on several database threads (PostgreSQL), and two
# syncs inserting the same new tool would collide.
_CATALOGUE_SYNC = threading.Lock()


# An upstream may list some tools only to clients that can sample, elicit or list roots (server-everything
# does). A listing made with fewer of these capabilities is no evidence that a missing tool is gone.
EVERY_CAPABILITY = frozenset({"sampling", "elicitation", "roots"})


def lists_everything(capabilities: dict | None) -> bool:
    return capabilities is not None and EVERY_CAPABILITY <= capabilities.keys()


def _visible_tools(server: Server, token: str, listed: list, complete: bool, mark_gone: bool) -> list:
    grant = authenticate(token, server, timezone.now())
    hashes = {d["name"]: definition_hash(d) for d in listed if isinstance(d, dict) and isinstance(d.get("name"), str)}
    known = _KNOWN_HASHES.setdefault((server.pk, server.created_at), dict(
        Tool.objects.filter(server=server, gone_at__isnull=True).values_list("name", "definition_hash")))
    dropped = mark_gone and bool(known.keys() - hashes.keys())  # a complete listing without a catalogued tool
    if dropped or any(known.get(name) != digest for name, digest in hashes.items()):
        with _CATALOGUE_SYNC:  # New tools get classified before use.
            sync_tools(server, listed, timezone.now(), complete=complete, mark_gone=mark_gone)
            if mark_gone:
                known.clear()  # what a complete listing leaves out is gone (sync_tools marked it)
            known.update(hashes)
    catalogue = {t.name: t for t in Tool.objects.filter(server=server, name__in=list(hashes), gone_at__isnull=True)}
    _, policy = calls.policy_for(server, grant)
    shown = []
    for definition in listed:
        tool = catalogue.get(definition.get("name")) if isinstance(definition, dict) else None
        if tool is not None and visibility(calls.facts_for(grant, server, tool, {}), policy).allowed:
            shown.append(definition)
    return shown


_filter_tools = dbthreads.hop(_visible_tools)


def _admit(token: str, server: Server, name: str, arguments: object, request_state: object) -> calls.Admission:
    try:
        return calls.admit(token, server, name, arguments, timezone.now(), request_state)
    except DatabaseError as exc:  # the database is the audit log: nothing is forwarded without it
        log.error("tools/call refused, database unavailable: %s", redact_text(str(exc))[:500])
        return calls.Admission(None, False, f"audit log unavailable ({type(exc).__name__}): the gateway cannot "
                                            "reach its database, so the call was not forwarded; try again shortly")


# The outcomes of calls finishing together are written together (dbthreads.Batch): one commit for all.
_outcomes = dbthreads.Batch(lambda item: calls.settle(item[0], **item[1]), calls.settle_many)


# --- entry point ---

async def handle(req: Request, msg: jsonrpc.Message) -> Reply:
    try:
        if msg.method == "initialize":
            return await _initialize(req, msg)
        if req.session_id is None and is_modern(msg):
            return await _modern(req, msg)
        return await _legacy(req, msg)
    except AuthFailure as exc:
        headers = [("www-authenticate", 'Bearer realm="portcullis"')] if exc.status == 401 else []
        return error_reply(auth_error(exc, msg.id), headers)
    except RpcError as err:
        return error_reply(RpcError(err.code, err.message, err.data, msg.id))
    except DatabaseError as exc:
        return error_reply(database_unavailable(exc, msg.id), RETRY_LATER)


# A 503 tells agents and load balancers alike that trying again shortly is the way out.
RETRY_LATER = [("retry-after", "5")]


def database_unavailable(exc: DatabaseError, msg_id=None) -> RpcError:
    """What an agent reads when the gateway cannot reach its own database: nothing was forwarded."""
    log.error("request refused, database unavailable: %s", redact_text(str(exc))[:500])
    return RpcError(jsonrpc.GATEWAY_UNAVAILABLE,
                    f"gateway database unavailable ({type(exc).__name__}): the gateway cannot check the policy or "
                    "write the audit log, so nothing was forwarded; try again shortly", id=msg_id)


def refusal_of(exc: RpcError | AuthFailure | DatabaseError, msg_id=None) -> RpcError:
    if isinstance(exc, AuthFailure):
        return auth_error(exc, msg_id)
    if isinstance(exc, DatabaseError):
        return database_unavailable(exc, msg_id)
    return exc


def auth_error(exc: AuthFailure, msg_id) -> RpcError:
    return RpcError(jsonrpc.UNAUTHORIZED if exc.status == 401 else jsonrpc.FORBIDDEN, str(exc), id=msg_id)


def is_modern(msg: jsonrpc.Message) -> bool:
    meta = msg.params.get("_meta")
    return msg.method == "server/discover" or (isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta)


# --- session era ---

async def _initialize(req: Request, msg: jsonrpc.Message) -> Reply:
    if req.session_id is not None and req.sse_stream is None:
        raise RpcError(jsonrpc.INVALID_REQUEST, "initialize must not carry an Mcp-Session-Id")
    if req.sse_stream is not None and REGISTRY.sessions.get(req.sse_stream[0]) is not None:
        raise RpcError(jsonrpc.INVALID_REQUEST, "this SSE session is already initialized")
    server, grant_id = await _authorise(req.slug, req.token)
    requested = msg.params.get("protocolVersion")
    version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
    session_id = req.sse_stream[0] if req.sse_stream is not None else REGISTRY.new_id()
    agent_caps = msg.params.get("capabilities") if isinstance(msg.params.get("capabilities"), dict) else {}
    link = UpstreamLink(server, on_notification=lambda raw: _from_upstream(session_id, raw),
                        ask_agent=lambda method, params, channel=None: _ask_agent(session_id, method, params, channel),
                        agent_capabilities=agent_caps)
    try:
        await link.start()
    except UpstreamError as exc:
        await link.close()
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    session = AgentSession(id=session_id, grant_id=grant_id, token_digest=tokens.digest(req.token),
                           server_id=server.pk, slug=server.slug, protocol_version=version, link=link,
                           get_stream=req.sse_stream[1] if req.sse_stream is not None else None)
    await REGISTRY.add(session)
    result = {"protocolVersion": version, "capabilities": _capabilities(link), "serverInfo": GATEWAY_INFO}
    if link.instructions():
        result["instructions"] = link.instructions()
    return Reply(200, jsonrpc.result(msg.id, result), [("mcp-session-id", session.id)])


def _capabilities(link: UpstreamLink) -> dict:
    caps = link.capabilities()
    caps.pop("experimental", None)  # unknown extensions are not relayed: the gateway cannot police them
    # tasks/* are not relayed: a task's deferred result would bypass the audited call, so tasks are not offered.
    caps.pop("tasks", None)
    return caps


async def _legacy(req: Request, msg: jsonrpc.Message) -> Reply:
    if req.session_id is None:
        raise RpcError(jsonrpc.INVALID_REQUEST, "missing Mcp-Session-Id header: send initialize first")
    # Another grant's token with this session id gets the same answer as an unknown session.
    session = session_for(req)
    version_header = req.headers.get("mcp-protocol-version")
    if version_header is not None and version_header not in HANDSHAKE_PROTOCOL_VERSIONS:
        raise RpcError(jsonrpc.INVALID_REQUEST, f"unsupported MCP-Protocol-Version {version_header!r}")
    if msg.method == "tools/call":
        server = session.link.server  # the call's own admission re-checks the grant and the server, in one hop
    else:
        server, _ = await _authorise(req.slug, req.token)
    try:
        await session.link.ensure()  # a dead upstream is restarted (with backoff) on the next call
    except UpstreamError as exc:
        await _upstream_problem(server.pk, str(exc))
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    if req.channel is not None:
        session.channels.append(req.channel)
    try:
        return await _dispatch(req, msg, server, session.link, modern=False, session=session)
    finally:
        if req.channel is not None:
            session.channels.remove(req.channel)


def session_for(req: Request) -> AgentSession:
    session = REGISTRY.get(req.session_id or "", req.slug)
    if session is None or not session.owned_by(req.token):
        raise RpcError(jsonrpc.SESSION_NOT_FOUND, "unknown or ended session: initialize again")
    return session


async def open_get_stream(req: Request, last_event_id: str | None = None) -> tuple[Channel, asyncio.Queue]:
    """The session's stream for messages not tied to a request (list_changed, logging, server requests), or with
    Last-Event-ID the rest of that stream of this session (gateway/protocol/resumption.py); the stream and its feed."""
    session = session_for(req)
    await _authorise(req.slug, req.token)
    if last_event_id is not None:
        return session.resume(last_event_id)
    return session.open_server_stream()


# --- from the upstream to the agent ---

async def _ask_agent(session_id: str, method: str, params: dict, channel: Channel | None = None) -> dict:
    """Relay a server→client request (sampling, elicitation, roots) and wait for the agent's answer. It goes on
    `channel` (the stream of the agent request it belongs to) when known and open, else on the session's outlet."""
    session = REGISTRY.sessions.get(session_id)
    outlet = channel if channel is not None and not channel.closed else None
    if outlet is None and session is not None:
        outlet = session.outlet()
    if session is None or outlet is None:
        raise RuntimeError("the agent has no open stream to receive the request")
    ask_id = f"portcullis-{REGISTRY.new_id()[:12]}"
    future = asyncio.get_running_loop().create_future()
    session.asked[ask_id] = future
    try:
        await outlet.put({"jsonrpc": "2.0", "id": ask_id, "method": method, "params": params})
        return await asyncio.wait_for(future, session.link.server.timeout_seconds)
    finally:
        session.asked.pop(ask_id, None)


async def _from_upstream(session_id: str, raw: dict) -> None:
    """An upstream notification: progress goes with its request; the rest to the agent's open stream."""
    session = REGISTRY.sessions.get(session_id)
    if session is None or raw.get("method") == "notifications/progress":
        return
    if raw.get("method") == "notifications/tools/list_changed":
        await _refresh_catalogue(session)
    outlet = session.outlet()
    if outlet is not None:
        await outlet.put({"jsonrpc": "2.0", **raw})


async def _refresh_catalogue(session: AgentSession) -> None:
    """The upstream's tool list changed: list it whole and sync the catalogue (new tools get classified,
    changed ones flagged) before the agent hears of it and lists again."""
    link, listed, cursor = session.link, [], None
    try:
        for _ in range(100):
            page = await link.request("tools/list", {"cursor": cursor} if cursor else {},
                                      timeout=link.server.timeout_seconds)
            listed.extend(page.get("tools") or [])
            cursor = page.get("nextCursor")
            if not cursor:
                break
        await _sync_catalogue(link.server, listed, lists_everything(link.agent_capabilities))
    except Exception as exc:  # the next tools/list syncs anyway; the failure is recorded on the server
        await _upstream_problem(link.server.pk, f"catalogue refresh after list_changed failed: {exc}")


def _sync_listing(server: Server, listed: list, mark_gone: bool) -> None:
    with _CATALOGUE_SYNC:
        sync_tools(server, listed, timezone.now(), complete=True, mark_gone=mark_gone)
        _KNOWN_HASHES.pop((server.pk, server.created_at), None)


_sync_catalogue = dbthreads.hop(_sync_listing)


def _progress_relay(req: Request, msg: jsonrpc.Message):
    """An on_progress callback that forwards upstream progress under the agent's own progress token."""
    meta = msg.params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    if token is None or req.channel is None:
        return None
    channel = req.channel

    async def forward(progress: float, total: float | None, message: str | None) -> None:
        params = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await channel.put({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    return forward


async def end_session(req: Request) -> Reply:
    session = session_for(req)
    await _authorise(req.slug, req.token)
    await REGISTRY.end(session.id)
    return Reply(200, None)


# --- stateless era ---

async def _modern(req: Request, msg: jsonrpc.Message) -> Reply:
    if msg.method != "server/discover" or PROTOCOL_VERSION_META_KEY in (msg.params.get("_meta") or {}):
        route = classify_inbound_request(msg.raw, headers=req.headers)
        if isinstance(route, InboundLadderRejection):
            raise RpcError(route.code, route.message, route.data)
    server, _ = await _authorise(req.slug, req.token)
    try:
        link = await REGISTRY.shared_link(server)
    except UpstreamError as exc:
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    if msg.method == "server/discover":
        result = {"supportedVersions": list(MODERN_PROTOCOL_VERSIONS), "capabilities": _capabilities(link),
                  "_meta": {SERVER_INFO_META_KEY: GATEWAY_INFO}, "cacheScope": "private", "ttlMs": 0,
                  "resultType": "complete"}
        if link.instructions():
            result["instructions"] = link.instructions()
        return Reply(200, jsonrpc.result(msg.id, result))
    return await _dispatch(req, msg, server, link, modern=True, session=None)


# --- methods ---

async def _dispatch(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink, *, modern: bool,
                    session: AgentSession | None) -> Reply:
    method = msg.method
    if msg.method is None:  # the agent's answer to a server→client request the gateway relayed
        future = session.asked.get(msg.id) if session is not None else None
        if future is not None and not future.done():
            future.set_result(msg.raw)
        return Reply(202, None)
    if msg.is_notification:
        if method in RELAYED_NOTIFICATIONS:
            await link.notify(method, _upstream_params(msg.params))
        elif method == "notifications/cancelled" and session is not None:
            task = session.inflight.get(msg.params.get("requestId"))
            if task is not None:
                task.cancel()  # the SDK then tells the upstream (notifications/cancelled with its own id)
        return Reply(202, None)
    if method == "ping":
        return _ok(msg, {}, modern)
    if method == "tools/list":
        return await _tools_list(req, msg, server, link, modern)
    if method == "tools/call":
        return await _tools_call(req, msg, server, link, modern, session)
    if method in RELAYED_REQUESTS:
        return await _relay(req, msg, server, link, modern)
    raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"method {method!r} is not supported by this gateway")


def _declared_capabilities(msg: jsonrpc.Message, modern: bool) -> dict | None:
    """A stateless-era agent's client capabilities, as declared in this request's own `_meta` (the upstream is
    told exactly these, filtered by link.declarable); None for a session-era agent, whose link already knows."""
    if not modern:
        return None
    meta = msg.params.get("_meta")
    declared = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
    return declared if isinstance(declared, dict) else {}


def _upstream_params(params: dict) -> dict:
    """The agent's params minus its era's envelope (the link stamps the upstream's) and minus task augmentation:
    the gateway offers no tasks, and a receiver without the capability processes the request normally."""
    if "task" in params:
        params = {k: v for k, v in params.items() if k != "task"}
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not (ENVELOPE_KEYS & meta.keys()):
        return params
    kept = {k: v for k, v in meta.items() if k not in ENVELOPE_KEYS}
    out = {k: v for k, v in params.items() if k != "_meta"}
    if kept:
        out["_meta"] = kept
    return out


def _shape(result: dict, modern: bool) -> dict:
    """Results speak the agent's era, whichever era the upstream spoke."""
    meta = result.get("_meta")
    if isinstance(meta, dict) and SERVER_INFO_META_KEY in meta:
        meta = {k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY}
        result = {**result, "_meta": meta} if meta else {k: v for k, v in result.items() if k != "_meta"}
    if modern:
        return result if "resultType" in result else {**result, "resultType": "complete"}
    return {k: v for k, v in result.items() if k not in ("resultType", "ttlMs", "cacheScope")}


def _ok(msg: jsonrpc.Message, result: dict, modern: bool) -> Reply:
    return Reply(200, jsonrpc.result(msg.id, _shape(result, modern)))


async def _relay(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink, modern: bool) -> Reply:
    params, on_progress = _upstream_params(msg.params), _progress_relay(req, msg)
    try:
        result = await link.request(msg.method, params, timeout=server.timeout_seconds, on_progress=on_progress,
                                    client_capabilities=_declared_capabilities(msg, modern))
        if not modern and input_bridge.is_input_required(result):  # prompts/get, resources/read: as tools/call
            result = await _answer_input(req, link, msg.method, params, result, server.timeout_seconds, on_progress)
    except input_bridge.BridgeFailure as exc:
        raise RpcError(jsonrpc.INTERNAL_ERROR, str(exc)) from None
    except MCPError as exc:
        raise RpcError(exc.code, exc.message, exc.error.data) from None
    except UpstreamError as exc:
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    return _ok(msg, result, modern)


async def _tools_list(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink,
                      modern: bool) -> Reply:
    try:
        if modern and _bridged(link, msg):
            # A session-era upstream offers capability-dependent tools only to a session that declared them.
            link = await REGISTRY.listing_link(server, declarable(_declared_capabilities(msg, modern)))
        result = await link.request("tools/list", _upstream_params(msg.params), timeout=server.timeout_seconds,
                                    client_capabilities=_declared_capabilities(msg, modern))
    except MCPError as exc:
        raise RpcError(exc.code, exc.message, exc.error.data) from None
    except UpstreamError as exc:
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    listed = result.get("tools")
    if not isinstance(listed, list):  # an unparseable list is refused, never passed through
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, f"upstream {server.slug!r} sent a tools/list without tools")
    complete = "cursor" not in msg.params and not result.get("nextCursor")
    declared = _declared_capabilities(msg, modern) if modern else link.agent_capabilities
    shown = await _filter_tools(server, req.token, listed, complete, complete and lists_everything(declared))
    out = {**result, "tools": shown}
    if modern:
        out.update(cacheScope="private", ttlMs=0)  # filtered per grant, and the policy can change at any time
    return _ok(msg, out, modern)


def _refusal(msg: jsonrpc.Message, text: str, modern: bool) -> Reply:
    return _ok(msg, {"content": [{"type": "text", "text": text}], "isError": True}, modern)


async def _tools_call(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink, modern: bool,
                      session: AgentSession | None) -> Reply:
    name, arguments = msg.params.get("name"), msg.params.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise RpcError(jsonrpc.INVALID_PARAMS, "tools/call needs params.name (a string)")
    if not isinstance(arguments, dict):
        raise RpcError(jsonrpc.INVALID_PARAMS, "tools/call params.arguments must be a JSON object")
    # A stateless-era agent's retry of an input_required round carries the gateway's sealed requestState: a
    # continuation of the call it was given for (gateway/calls/continuations.py), admitted without a second reservation.
    request_state = msg.params.get("requestState") if modern else None
    admission = await dbthreads.run(_admit, req.token, server, name, arguments, request_state)
    events.call_changed(admission.call_id, server.slug,
                        "opened" if admission.forward or admission.held else "refused")
    if admission.held is not None:
        admission = await hold(req, msg, admission)
        events.call_changed(admission.call_id, server.slug, "opened" if admission.forward else "refused")
    parked_id = admission.continuation.parked_id if admission.continuation is not None else None
    if not admission.forward:
        if parked_id is not None:  # a genuine state the policy now refuses: its parked upstream call ends too
            await _abort_parked(parked_id, admission.grant_id,
                                f"cancelled: the policy refused its continuation (call #{admission.call_id}): "
                                f"{admission.message}")
        return _refusal(msg, admission.message, modern)
    if parked_id is not None or (modern and admission.continuation is None and _bridged(link, msg)):
        return await _bridged_call(req, msg, server, admission, name, arguments, parked_id)
    started = time.perf_counter()
    # Unknown until the upstream answers: an unexpected error in between must never be audited as `ok`.
    outcome, error = Call.Outcome.INTERRUPTED, "gateway error before the upstream answered"
    result, reply, size = None, None, None
    if session is not None and (task := asyncio.current_task()) is not None:
        session.inflight[msg.id] = task  # so notifications/cancelled from the agent can cancel it
    try:
        result = await _call_upstream(req, msg, server, link, modern, admission.continuation)
        outcome, error = (Call.Outcome.TOOL_ERROR if result.get("isError") else Call.Outcome.OK), ""
        if modern and input_bridge.is_input_required(result):
            result = _sealed(result, admission, server, name, arguments)
        reply = _ok(msg, result, modern)
        size = len(jsonrpc.dumps(result))
        if size > settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES:
            # The tool ran (its reservation is kept) but its answer is not passed on.
            outcome = Call.Outcome.TOOL_ERROR
            error = (f"upstream answer of {size} bytes exceeds the gateway's limit of "
                     f"{settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES} bytes; it was not passed on")
            reply = _refusal(msg, error, modern)
    except input_bridge.BridgeFailure as exc:
        # The upstream began the call and could not finish it: its reservation is kept, like a tool error.
        outcome, error = Call.Outcome.TOOL_ERROR, f"input_required not completed: {exc}"
        reply = _refusal(msg, str(exc), modern)
    except MCPError as exc:
        outcome, error, reply = _upstream_failure(msg, server, exc, modern)
        if outcome == Call.Outcome.INTERRUPTED:
            await _upstream_problem(server.pk, link.death_report())
    except UpstreamError as exc:
        outcome, error = Call.Outcome.INTERRUPTED, str(exc)
        reply = _refusal(msg, f"upstream unavailable: {exc}; the call's outcome is unknown", modern)
    except asyncio.CancelledError:
        outcome, error = Call.Outcome.INTERRUPTED, "cancelled by the agent or its disconnect"
        raise
    finally:
        if session is not None:
            session.inflight.pop(msg.id, None)
        latency = (time.perf_counter() - started) * 1000
        size = size if result is not None else None
        await _outcomes.submit((admission, {"outcome": outcome, "latency_ms": latency, "result_size": size,
                                            "error": error, "now": timezone.now()}))
        events.call_changed(admission.call_id, server.slug, "settled")
    return reply


async def _call_upstream(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink,
                         modern: bool, continuation: continuations.Continuation | None = None) -> dict:
    """The upstream's final result. A stateless-era agent answers `input_required` itself (it is passed through,
    with the gateway's sealed requestState); for a session-era agent the gateway asks the agent and repeats the
    call (gateway/protocol/input_bridge.py)."""
    params = _upstream_params(msg.params)
    if not modern:  # no multi round-trip fields in the session era: the gateway alone fills them in
        params = {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
    elif "requestState" in params:  # the upstream gets its own state back, never the gateway's seal
        params = {k: v for k, v in params.items() if k != "requestState"}
        if continuation is not None and continuation.upstream_state is not None:
            params["requestState"] = continuation.upstream_state
    on_progress = _progress_relay(req, msg)
    result = await link.request("tools/call", params, timeout=server.timeout_seconds, on_progress=on_progress,
                                client_capabilities=_declared_capabilities(msg, modern))
    if modern or not input_bridge.is_input_required(result):
        return result
    return await _answer_input(req, link, "tools/call", params, result, server.timeout_seconds, on_progress)


async def _answer_input(req: Request, link: UpstreamLink, method: str, params: dict, first: dict, timeout: float,
                        on_progress) -> dict:
    """Session-era agent: ask it the upstream's questions, on the stream of the request they belong to, and
    repeat the request with its answers."""
    async def resend(responses: dict | None, state: str | None) -> dict:
        extra = {"inputResponses": responses, "requestState": state}
        again = {**params, **{k: v for k, v in extra.items() if v is not None}}
        return await link.request(method, again, timeout=timeout, on_progress=on_progress)

    ask = functools.partial(link.ask_agent, channel=req.channel) if link.ask_agent is not None else None
    return await input_bridge.complete(first, ask=ask, capabilities=link.agent_capabilities, resend=resend)


def _sealed(result: dict, admission: calls.Admission, server: Server, name: str, arguments: dict) -> dict:
    """An upstream's input_required for a stateless-era agent, its requestState replaced by the gateway's seal:
    the agent's retry is then recognised as this call's next round (bound to grant, server, tool, arguments)."""
    continuation = admission.continuation
    binding = continuations.Binding(admission.grant_id, server.pk, name, audit.argument_hash(arguments))
    upstream_state = result.get("requestState")
    if not isinstance(upstream_state, str):
        upstream_state = None
    state = continuations.seal(
        upstream_state, binding=binding, now=timezone.now(),
        first_call_id=continuation.first_call_id if continuation is not None else admission.call_id,
        round_no=continuation.round_no + 1 if continuation is not None else 1)
    return {**result, "requestState": state}


# --- a session-era upstream asking a stateless-era agent (gateway/protocol/parked_calls.py) ---

def _bridged(link: UpstreamLink, msg: jsonrpc.Message) -> bool:
    """A stateless-era agent that can be asked, on an upstream reached in the session era: the shared link
    declared nothing, so such calls (and listings) need a link that declares what this agent declared."""
    return bool(declarable(_declared_capabilities(msg, True))) and \
        link.protocol_version not in MODERN_PROTOCOL_VERSIONS


async def _abort_parked(parked_id: str, grant_id: int | None, reason: str) -> None:
    parked = parked_calls.REGISTRY.claim(parked_id, grant_id) if grant_id is not None else None
    if parked is not None:
        await parked_calls.REGISTRY.abort(parked, reason, settle=True)


async def _settle_abandoned(parked: parked_calls.ParkedCall, reason: str) -> None:
    """A parked call that ended without its final result: its first round's row gets the reason."""
    latency = (time.perf_counter() - parked.started) * 1000
    await _outcomes.submit((parked.first_admission, {"outcome": Call.Outcome.INTERRUPTED, "latency_ms": latency,
                                                     "result_size": None, "error": reason, "now": timezone.now()}))
    events.call_changed(parked.first_call_id, parked.link.server.slug if parked.link else "", "settled")


async def _bridged_call(req: Request, msg: jsonrpc.Message, server: Server, admission: calls.Admission, name: str,
                        arguments: dict, parked_id: str | None) -> Reply:
    """One request of a stateless-era agent in a call a session-era upstream may ask questions in.

    The first round starts the upstream call on a link of its own (declaring exactly the agent's capabilities);
    a continuation hands the agent's answer to the parked call's waiting question. Either way the request then
    waits for the call's next event: a question (answered to the agent as `input_required` with a sealed state
    naming the parked call; the call stays parked) or the final result (returned; the first round's row is
    settled with it). Rows: the first round's carries the decision and counters and is settled when the call
    ends; each continuation has its own (settled with what its request returned)."""
    started = time.perf_counter()
    outcome, error = Call.Outcome.INTERRUPTED, "gateway error before the upstream answered"
    result, reply, size = None, None, None
    parked: parked_calls.ParkedCall | None = None
    settle_this, ended = True, False
    try:
        if parked_id is None:
            refusal = parked_calls.REGISTRY.room_for(admission.grant_id)
            if refusal is not None:  # nothing was started upstream: the reservation is given back
                outcome, error = Call.Outcome.PROTOCOL_ERROR, refusal
                return _refusal(msg, refusal, True)
            parked = parked_calls.ParkedCall(admission.grant_id, admission.call_id, started, _settle_abandoned,
                                             first_admission=admission)
            parked.link = UpstreamLink(server, ask_agent=parked.ask,
                                       agent_capabilities=declarable(_declared_capabilities(msg, True)))
            parked_calls.REGISTRY.add(parked)
            try:
                await parked.link.start()
            except UpstreamError:
                parked_calls.REGISTRY.finish(parked)
                ended = True
                raise
            params = {k: v for k, v in _upstream_params(msg.params).items()
                      if k not in ("inputResponses", "requestState")}
            # The call may wait for the agent in every round: the server's timeout plus each round's TTL.
            budget = server.timeout_seconds + settings.PORTCULLIS_CONTINUATION_TTL_S * (continuations.MAX_ROUNDS + 1)
            parked.start(parked.link.request("tools/call", params, timeout=budget))
        else:
            parked = parked_calls.REGISTRY.claim(parked_id, admission.grant_id)
            if parked is None:
                outcome = Call.Outcome.REFUSED
                error = ("the call this requestState continues is not waiting in this gateway process (it ended, "
                         "was abandoned, or its upstream call is held by another gateway process); "
                         f"{continuations.START_AGAIN}")
                return _refusal(msg, error, True)
            responses = msg.params.get("inputResponses")
            answer = responses.get(parked.question_key) if isinstance(responses, dict) else None
            parked.answer({"result": answer} if isinstance(answer, dict) else {"error": {
                "code": jsonrpc.INVALID_PARAMS, "message": f"the agent sent no answer for {parked.question_key!r}"}})
        event = await parked.next_event()
        if isinstance(event, parked_calls.Question):
            parked.round_no += 1
            parked.question_key = f"portcullis-{parked.round_no}"
            binding = continuations.Binding(admission.grant_id, server.pk, name, audit.argument_hash(arguments))
            state = continuations.seal(None, binding=binding, first_call_id=parked.first_call_id,
                                       round_no=parked.round_no, now=timezone.now(), parked_id=parked.id)
            result = {"resultType": "input_required", "requestState": state,
                      "inputRequests": {parked.question_key: {"method": event.method, "params": event.params}}}
            parked_calls.REGISTRY.park(parked)
            settle_this = parked_id is not None  # the first round's row waits for the call's end
            outcome, error, size = Call.Outcome.OK, "", len(jsonrpc.dumps(result))
            return _ok(msg, result, True)
        parked_calls.REGISTRY.finish(parked)
        ended = True
        if isinstance(event.error, asyncio.CancelledError):
            error = "the upstream call was cancelled; its outcome is unknown"
            return _refusal(msg, error, True)
        if event.error is not None:
            raise event.error
        result = event.result
        outcome, error = (Call.Outcome.TOOL_ERROR if result.get("isError") else Call.Outcome.OK), ""
        reply, size = _ok(msg, result, True), len(jsonrpc.dumps(result))
        if size > settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES:
            outcome = Call.Outcome.TOOL_ERROR
            error = (f"upstream answer of {size} bytes exceeds the gateway's limit of "
                     f"{settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES} bytes; it was not passed on")
            reply = _refusal(msg, error, True)
        return reply
    except MCPError as exc:
        outcome, error, reply = _upstream_failure(msg, server, exc, True)
        return reply
    except UpstreamError as exc:
        outcome, error = Call.Outcome.INTERRUPTED, str(exc)
        return _refusal(msg, f"upstream unavailable: {exc}; the call's outcome is unknown", True)
    except asyncio.CancelledError:  # the agent closed its stream: in this era, a cancellation
        outcome, error = Call.Outcome.INTERRUPTED, "cancelled by the agent or its disconnect"
        if parked is not None and not ended:
            await parked_calls.REGISTRY.abort(parked, error, settle=False)
            ended = True
        raise
    finally:
        now, latency = timezone.now(), (time.perf_counter() - started) * 1000
        if settle_this:
            await _outcomes.submit((admission, {"outcome": outcome, "latency_ms": latency, "result_size": size,
                                                "error": error, "now": now}))
            events.call_changed(admission.call_id, server.slug, "settled")
        if ended and parked is not None and parked.first_admission is not admission:
            first = parked.first_admission
            await _outcomes.submit((first, {"outcome": outcome, "error": error, "now": now, "result_size": size,
                                            "latency_ms": (time.perf_counter() - parked.started) * 1000}))
            events.call_changed(first.call_id, server.slug, "settled")


def _upstream_failure(msg, server: Server, exc: MCPError, modern: bool) -> tuple[str, str, Reply]:
    if exc.code == REQUEST_TIMEOUT:
        text = (f"upstream timeout: {server.slug} did not answer within {server.timeout_seconds} s; "
                "the call was cancelled upstream and its outcome is unknown")
        return Call.Outcome.TIMEOUT, text, _refusal(msg, text, modern)
    if exc.code == CONNECTION_CLOSED:
        text = f"upstream connection lost during the call; its outcome is unknown ({exc.message})"
        return Call.Outcome.INTERRUPTED, text, _refusal(msg, text, modern)
    if not modern and (text := input_bridge.missing_capability_text(exc.code, exc.error.data)) is not None:
        # A session-era agent has no such error code; the tool did not run, so this is still a protocol error.
        return Call.Outcome.PROTOCOL_ERROR, f"{exc.code}: {exc.message}", _refusal(msg, text, modern)
    reply = error_reply(RpcError(exc.code, exc.message, exc.error.data, msg.id))
    return Call.Outcome.PROTOCOL_ERROR, f"{exc.code}: {exc.message}", reply
