"""The MCP side of the agent endpoint: which era, which session, and what each method does.

HTTP concerns (Host, Origin, sizes, content types) stay in gateway/edge/; this module takes one parsed JSON-RPC
message from a request and returns one reply. Every request is authorised against the database (a revoked grant
stops on its next call). `tools/list` is in tools_list.py, `tools/call` in tools_call.py; every other known
method is relayed faithfully to the upstream (upstream_request.py), and answers are shaped for the agent's era
(era.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from django.db import DatabaseError
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request
from mcp_types import PROTOCOL_VERSION_META_KEY, SERVER_INFO_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

from gateway import calls
from gateway.calls import continuations
from gateway.grants import AuthFailure
from gateway.models import Server
from gateway.protocol import answers, held_tasks, input_bridge, jsonrpc, peers
from gateway.protocol.era import Era, era_of, upstream_params
from gateway.protocol.exchange import Reply, Request, error_reply, ok_reply
from gateway.protocol.governed_reads import GOVERNED, LISTINGS, filtered_listing, governed_read
from gateway.protocol.hops import authorise, record_upstream_problem
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.sessions import REGISTRY, AgentSession
from gateway.protocol.streams import Channel
from gateway.protocol.tools_call import tools_call
from gateway.protocol.tools_list import refresh_catalogue, tools_list
from gateway.protocol.upstream_request import ask_upstream
from gateway.redaction import redact_text
from gateway.telemetry import tracing
from gateway.upstream.connect import UpstreamError
from gateway.upstream.link import UpstreamLink

log = logging.getLogger("portcullis.relay")

GATEWAY_INFO = {"name": "portcullis", "title": "Portcullis MCP policy gateway", "version": "0.1.0"}

# Methods an agent may send besides tools/*, the governed reads and the listings filtered by the policy
# (governed_reads.py); anything else is refused here and never reaches an upstream.
RELAYED_REQUESTS = frozenset({"resources/unsubscribe", "logging/setLevel"})
RELAYED_NOTIFICATIONS = frozenset({"notifications/roots/list_changed", "notifications/progress"})
# A 503 tells agents and load balancers alike that trying again shortly is the way out.
RETRY_LATER = [("retry-after", "5")]


# --- entry point ---

async def handle(req: Request, msg: jsonrpc.Message) -> Reply:
    if not tracing.ENABLED:
        return await _handle(req, msg)
    with tracing.request_span(req.headers, msg.method, msg.params if isinstance(msg.params, dict) else {}, msg.id,
                              req.session_id, req.headers.get("mcp-protocol-version")):
        reply = await _handle(req, msg)
        error = reply.body.get("error") if isinstance(reply.body, dict) else None
        result = reply.body.get("result") if isinstance(reply.body, dict) else None
        if isinstance(error, dict):
            tracing.failed(str(error.get("code")), str(error.get("code")))
        elif isinstance(result, dict) and result.get("isError") is True:
            tracing.failed("tool_error")
        return reply


async def _handle(req: Request, msg: jsonrpc.Message) -> Reply:
    try:
        if msg.method == "initialize":
            return await _initialize(req, msg)
        if era_of(msg.method, msg.params, req.session_id) is Era.STATELESS:
            return await _stateless(req, msg)
        return await _in_session(req, msg)
    except (AuthFailure, RpcError, DatabaseError) as exc:
        return refused(exc, msg.id)


def refused(exc: AuthFailure | RpcError | DatabaseError, msg_id=None) -> Reply:
    """The reply for a request refused before it reached the upstream: 401 with how to authenticate, 403, the
    protocol's own errors, or 503 when the gateway's database is unavailable."""
    if isinstance(exc, AuthFailure):
        headers = [("www-authenticate", 'Bearer realm="portcullis"')] if exc.status == 401 else []
        return error_reply(auth_error(exc, msg_id), headers)
    if isinstance(exc, DatabaseError):
        return error_reply(database_unavailable(exc, msg_id), RETRY_LATER)
    return error_reply(RpcError(exc.code, exc.message, exc.data, msg_id))


def database_unavailable(exc: DatabaseError, msg_id=None) -> RpcError:
    """What an agent reads when the gateway cannot reach its own database: nothing was forwarded."""
    log.error("request refused, database unavailable: %s", redact_text(str(exc))[:500])
    return RpcError(jsonrpc.GATEWAY_UNAVAILABLE,
                    f"gateway database unavailable ({type(exc).__name__}): the gateway cannot check the policy or "
                    "write the audit log, so nothing was forwarded; try again shortly", id=msg_id)


def auth_error(exc: AuthFailure, msg_id) -> RpcError:
    return RpcError(jsonrpc.UNAUTHORIZED if exc.status == 401 else jsonrpc.FORBIDDEN, str(exc), id=msg_id)


# --- session era ---

async def _initialize(req: Request, msg: jsonrpc.Message) -> Reply:
    if req.session_id is not None and req.sse_stream is None:
        raise RpcError(jsonrpc.INVALID_REQUEST, "initialize must not carry an Mcp-Session-Id")
    if req.sse_stream is not None and REGISTRY.sessions.get(req.sse_stream[0]) is not None:
        raise RpcError(jsonrpc.INVALID_REQUEST, "this SSE session is already initialized")
    server, grant_id = await authorise(req.slug, req.token)
    requested = msg.params.get("protocolVersion")
    version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
    agent_caps = msg.params.get("capabilities") if isinstance(msg.params.get("capabilities"), dict) else {}
    legacy = req.sse_stream is not None
    try:
        session = await REGISTRY.open(server, grant_id, req.token, version, agent_caps,
                                      session_id=req.sse_stream[0] if legacy else None, legacy=legacy,
                                      get_stream=req.sse_stream[1] if legacy else None)
    except UpstreamError as exc:
        await record_upstream_problem(server, str(exc))
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    link = session.link
    result = {"protocolVersion": version, "capabilities": _capabilities(link), "serverInfo": GATEWAY_INFO}
    if link.instructions():
        result["instructions"] = link.instructions()
    return Reply(200, jsonrpc.result(msg.id, result), [("mcp-session-id", session.id)])


def _capabilities(link: UpstreamLink) -> dict:
    caps = link.capabilities()
    caps.pop("experimental", None)  # unknown extensions are not relayed: the gateway cannot police them
    caps.pop("extensions", None)
    # tasks/* are not relayed: a task's deferred result would bypass the audited call, so tasks are not offered.
    caps.pop("tasks", None)
    return caps


async def _in_session(req: Request, msg: jsonrpc.Message) -> Reply:
    if req.session_id is None:
        await authorise(req.slug, req.token)  # a bad token hears 401 first
        raise RpcError(jsonrpc.INVALID_REQUEST, "missing Mcp-Session-Id header: send initialize first")
    session = await session_for(req)
    version_header = req.headers.get("mcp-protocol-version")
    if version_header is not None and version_header not in HANDSHAKE_PROTOCOL_VERSIONS:
        raise RpcError(jsonrpc.INVALID_REQUEST, f"unsupported MCP-Protocol-Version {version_header!r}")
    if msg.method == "tools/call":
        server = session.link.server  # the call's own admission re-checks the grant and the server, in one hop
    else:
        server, _ = await authorise(req.slug, req.token)
    try:
        await session.link.ensure()  # a dead upstream is restarted (with backoff) on the next call
    except UpstreamError as exc:
        await record_upstream_problem(server, str(exc))
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    if req.channel is not None:
        session.channels.append(req.channel)
    try:
        return await _dispatch(req, msg, server, session.link, Era.SESSION, session)
    finally:
        if req.channel is not None:
            session.channels.remove(req.channel)


async def session_for(req: Request) -> AgentSession:
    """The request's session, served by this process whichever process opened it. When this process holds no view
    of it for this token, the token is checked first: a bad one hears 401 (OAuth-capable clients re-authenticate on
    401 only); a good one, even another grant's with this session's id, hears the same as for an unknown session."""
    session = REGISTRY.get(req.session_id, req.slug) if req.session_id else None
    if session is not None and session.owned_by(req.token):
        return session
    server, grant_id = await authorise(req.slug, req.token)
    if req.session_id:
        try:
            session = await REGISTRY.find(req.session_id, req.slug, server, grant_id, req.token)
        except UpstreamError as exc:
            await record_upstream_problem(server, str(exc))
            raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    if session is None:
        raise RpcError(jsonrpc.SESSION_NOT_FOUND, "unknown or ended session: initialize again")
    return session


async def open_get_stream(req: Request, last_event_id: str | None = None) -> tuple[Channel, asyncio.Queue]:
    """The session's stream for messages not tied to a request (list_changed, logging, server requests), or with
    Last-Event-ID the rest of that stream of this session (gateway/protocol/resumption.py); the stream and its feed."""
    session = await session_for(req)
    await authorise(req.slug, req.token)
    if last_event_id is not None:
        return session.resume(last_event_id)
    return session.open_server_stream()


async def end_session(req: Request) -> Reply:
    session = await session_for(req)
    await authorise(req.slug, req.token)
    await REGISTRY.end(session.id)
    return Reply(200, None)


# --- from the upstream to the agent ---

async def _ask_agent(session_id: str, method: str, params: dict, channel: Channel | None = None) -> dict:
    """Relay a server→client request (sampling, elicitation, roots) and wait for the agent's answer, which may
    reach any gateway process (answers.py). It goes on `channel` (the stream of the agent request it belongs to)
    when known and open, else on the session's outlet."""
    session = REGISTRY.sessions.get(session_id)
    outlet = channel if channel is not None and not channel.closed else None
    if outlet is None and session is not None:
        outlet = session.outlet()
    if session is None or outlet is None:
        raise RuntimeError("the agent has no open stream to receive the request")
    ask_id, future = answers.new_question(session_id)
    try:
        await outlet.put({"jsonrpc": "2.0", "id": ask_id, "method": method, "params": params})
        return await asyncio.wait_for(future, session.link.server.timeout_seconds)
    finally:
        answers.forget(ask_id)


async def _from_upstream(session_id: str, raw: dict) -> None:
    """A private link's notification: progress goes with its request; the rest to the agent's open stream."""
    session = REGISTRY.sessions.get(session_id)
    if session is None or raw.get("method") == "notifications/progress":
        return
    if raw.get("method") == "notifications/tools/list_changed":
        await refresh_catalogue(session.link)
    outlet = session.outlet()
    if outlet is not None:
        await outlet.put({"jsonrpc": "2.0", **raw})


# What a shared link hears that concerns every session on it; the rest (logging, resource updates) belongs to no
# one agent and is not relayed from a shared link.
SHARED_NOTIFICATIONS = frozenset({"notifications/tools/list_changed", "notifications/resources/list_changed",
                                  "notifications/prompts/list_changed"})


async def _from_shared_upstream(server_id: int, raw: dict) -> None:
    method = raw.get("method")
    if method not in SHARED_NOTIFICATIONS:
        return
    if method == "notifications/tools/list_changed" and (link := REGISTRY.shared.get(server_id)) is not None:
        await refresh_catalogue(link)
    for session in list(REGISTRY.sessions.values()):
        if session.server_id == server_id and not session.private and (outlet := session.outlet()) is not None:
            await outlet.put({"jsonrpc": "2.0", "method": method, "params": raw.get("params") or {}})


REGISTRY.on_notification = _from_upstream
REGISTRY.ask_agent = _ask_agent
REGISTRY.on_shared_notification = _from_shared_upstream


# --- stateless era ---

# The server as this process last loaded it for a stateless-era request, per slug: (when, server). A tools/call
# within RECENT_SERVER_S of that goes straight to admission on the shared link already running: no second database
# hop to load the server again. Admission authenticates the token and checks the grant and the server's enabled flag
# itself (gateway/calls/admission.py), and, in the same query, that this copy is still the registration as it is
# (its updated_at): if not, nothing was written, and the request goes the long way, loading the server. A call
# admission wrote read that the copy is current, as a load would have: the copy is recent from then on, so while
# calls keep coming the server is not loaded again (before, the copy lapsed every second and every request in
# flight at that moment loaded it).
_RECENT_SERVERS: dict[str, tuple[float, Server]] = {}
RECENT_SERVER_S = 1.0


def _recent_link(slug: str) -> tuple[Server, UpstreamLink] | None:
    recent = _RECENT_SERVERS.get(slug)
    if recent is None or time.monotonic() - recent[0] > RECENT_SERVER_S:
        return None
    server = recent[1]
    link = REGISTRY.shared.get(server.pk)
    if link is None or not link.alive or link.server is not server:
        return None
    return server, link


async def _stateless(req: Request, msg: jsonrpc.Message) -> Reply:
    if msg.method == "tools/call":
        holder = peers.holder_of(continuations.parked_id_of(msg.params.get("requestState")))
        if not peers.is_here(holder):  # the retry of a call parked in another process goes there
            reply = await _on_holder(holder, req, msg)
            if reply is not None:
                return reply
    if msg.method != "server/discover" or PROTOCOL_VERSION_META_KEY in (msg.params.get("_meta") or {}):
        route = classify_inbound_request(msg.raw, headers=req.headers)
        if isinstance(route, InboundLadderRejection):
            raise RpcError(route.code, route.message, route.data)
    if msg.method == "tools/call" and (recent := _recent_link(req.slug)) is not None:
        req.recent_server = True
        try:
            reply = await _dispatch(req, msg, recent[0], recent[1], Era.STATELESS, None)
        except calls.StaleServer:  # changed since: nothing was decided or written; load it as any request does
            _RECENT_SERVERS.pop(req.slug, None)
            req.recent_server = False
        else:
            confirmed, kept = req.server_confirmed_at, _RECENT_SERVERS.get(req.slug)
            if confirmed is not None and kept is not None and kept[1] is recent[0] and confirmed > kept[0]:
                _RECENT_SERVERS[req.slug] = (confirmed, recent[0])
            return reply
    server, grant_id = await authorise(req.slug, req.token)
    if msg.method in held_tasks.METHODS:  # held calls the agent follows as tasks: the gateway's own
        return await held_tasks.handle(msg, server, grant_id)
    try:
        link = await REGISTRY.shared_link(server)
    except UpstreamError as exc:
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    # The link's own snapshot: shared_link() replaced the link if the registration changed (updated_at included).
    _RECENT_SERVERS[req.slug] = (time.monotonic(), link.server)
    if msg.method == "server/discover":
        capabilities = _capabilities(link)
        capabilities["extensions"] = {held_tasks.TASKS_EXTENSION: {}}  # for held calls (gateway/protocol/held_tasks.py)
        result = {"supportedVersions": list(MODERN_PROTOCOL_VERSIONS), "capabilities": capabilities,
                  "_meta": {SERVER_INFO_META_KEY: GATEWAY_INFO}, "cacheScope": "private", "ttlMs": 0,
                  "resultType": "complete"}
        if link.instructions():
            result["instructions"] = link.instructions()
        return Reply(200, jsonrpc.result(msg.id, result))
    return await _dispatch(req, msg, server, link, Era.STATELESS, None)


async def _on_holder(holder: str, req: Request, msg: jsonrpc.Message) -> Reply | None:
    """The request handled by the process holding its parked call; None when that process does not answer (then
    this one admits it, audits it and refuses it: the call is not waiting here)."""
    payload = {"slug": req.slug, "token": req.token, "headers": req.headers, "raw": msg.raw}
    try:
        answer = await peers.call(holder, "parked.retry", payload, timeout=PARKED_RETRY_TIMEOUT_S)
    except peers.PeerUnavailable as exc:
        log.warning("a parked call's retry could not reach its process: %s", exc)
        return None
    return Reply(int(answer.get("status", 500)), answer.get("body"), [tuple(h) for h in answer.get("headers", [])])


async def _parked_retry_from_a_peer(payload: dict) -> dict:
    req = Request(slug=payload["slug"], token=payload["token"], headers=dict(payload["headers"]))
    try:
        msg = jsonrpc.parse(jsonrpc.dumps(payload["raw"]))
    except RpcError as exc:
        reply = refused(exc)
    else:
        try:
            reply = await handle(req, msg)
        except Exception:  # the sender must hear something, or it waits for an hour
            log.exception("a parked call's retry from another process failed")
            reply = error_reply(RpcError(jsonrpc.INTERNAL_ERROR, "internal gateway error; see the gateway log",
                                         id=msg.id))
    return {"status": reply.status, "body": reply.body, "headers": [list(h) for h in reply.headers]}


peers.on("parked.retry", _parked_retry_from_a_peer)
# The retry waits there for the upstream's next question or its result: as long as a call may take.
PARKED_RETRY_TIMEOUT_S = 3600.0


# --- methods ---

async def _dispatch(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink, era: Era,
                    session: AgentSession | None) -> Reply:
    method = msg.method
    if msg.method is None:  # the agent's answer to a server→client request the gateway relayed
        if session is not None:
            await answers.deliver(msg.id, session.id, msg.raw)
        return Reply(202, None)
    if msg.is_notification:
        if method in RELAYED_NOTIFICATIONS:
            await link.notify(method, upstream_params(msg.params))
        elif method == "notifications/cancelled" and session is not None:
            task = session.inflight.get(msg.params.get("requestId"))
            if task is not None:
                task.cancel()  # the SDK then tells the upstream (notifications/cancelled with its own id)
        return Reply(202, None)
    if method == "ping":
        return ok_reply(msg, {}, era)
    if method == "tools/list":
        return await tools_list(req, msg, server, link, era)
    if method == "tools/call":
        return await tools_call(req, msg, server, link, era, session)
    if method in GOVERNED:
        return await governed_read(req, msg, server, link, era)
    if method in LISTINGS:
        return await filtered_listing(req, msg, server, link, era)
    if method in RELAYED_REQUESTS:
        return await _relay(req, msg, server, link, era)
    raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"method {method!r} is not supported by this gateway")


async def _relay(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink, era: Era) -> Reply:
    """Any other known method, as it is: prompts/get and resources/read may ask questions, as tools/call."""
    try:
        result = await ask_upstream(req, msg, link, era, upstream_params(msg.params), server.timeout_seconds)
    except input_bridge.BridgeFailure as exc:
        raise RpcError(jsonrpc.INTERNAL_ERROR, str(exc)) from None
    except MCPError as exc:
        raise RpcError(exc.code, exc.message, exc.error.data) from None
    except UpstreamError as exc:
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    return ok_reply(msg, result, era)
