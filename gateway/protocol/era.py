"""The two eras of the MCP protocol, as one agent request shows them, and what each era's messages look like.

Pure: no I/O, no Django. The session era (protocol versions up to 2025-11-25) opens a session with `initialize`
and names it in `Mcp-Session-Id`; the stateless era (2026-07-28) carries its envelope (protocol version, client
info and capabilities) in every request's `_meta`, and `server/discover` replaces the handshake. The gateway
speaks both on one URL, whichever era the upstream speaks, so every answer is shaped for the agent's own era.
"""

from __future__ import annotations

import enum

from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY, SERVER_INFO_META_KEY
from mcp_types.methods import CACHEABLE_METHODS

# The envelope keys of the agent's own era: the upstream link stamps the upstream's.
ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION_META_KEY, "io.modelcontextprotocol/clientInfo",
                           CLIENT_CAPABILITIES_META_KEY})
# Result keys only the stateless era has.
STATELESS_RESULT_KEYS = ("resultType", "ttlMs", "cacheScope")


class Era(enum.Enum):
    SESSION = "session"  # initialize + Mcp-Session-Id (up to 2025-11-25), and legacy HTTP+SSE
    STATELESS = "stateless"  # 2026-07-28: the envelope in every request's _meta


def era_of(method: str | None, params: dict, session_id: str | None) -> Era:
    """`initialize` and any request in a session are session-era; `server/discover` or an envelope in `_meta`
    without a session is stateless-era; anything else is a session-era request missing its session."""
    if method == "initialize" or session_id is not None:
        return Era.SESSION
    meta = params.get("_meta")
    if method == "server/discover" or (isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta):
        return Era.STATELESS
    return Era.SESSION


def shape_result(result: dict, era: Era, method: str | None = None) -> dict:
    """A result in the agent's era, whichever era the upstream spoke: the upstream's serverInfo stamp removed;
    stateless results always say their resultType, and a complete result of a cacheable method (tools/list,
    resources/*, prompts/list, server/discover) says it may not be shared or kept (`cacheScope` private, `ttlMs` 0:
    what an agent sees depends on its grant and on a policy that can change at any time, whatever the upstream
    allowed); session results carry no stateless-only keys."""
    meta = result.get("_meta")
    if isinstance(meta, dict) and SERVER_INFO_META_KEY in meta:
        meta = {k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY}
        result = {**result, "_meta": meta} if meta else {k: v for k, v in result.items() if k != "_meta"}
    if era is Era.SESSION:
        return {k: v for k, v in result.items() if k not in STATELESS_RESULT_KEYS}
    result = result if "resultType" in result else {**result, "resultType": "complete"}
    if method in CACHEABLE_METHODS and result["resultType"] == "complete":
        result = {**result, "cacheScope": "private", "ttlMs": 0}
    return result


def upstream_params(params: dict) -> dict:
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


def declared_capabilities(params: dict, era: Era) -> dict | None:
    """A stateless-era agent's client capabilities as declared in this request's own `_meta` ({} when it
    declared none); None for a session-era agent, whose upstream link already knows them from initialize."""
    if era is Era.SESSION:
        return None
    meta = params.get("_meta")
    declared = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
    return declared if isinstance(declared, dict) else {}


def tool_call_params(params: dict, era: Era, upstream_state: str | None) -> dict:
    """What a tools/call sends upstream. Session era: no multi round-trip fields (the gateway alone fills them
    in). Stateless era: the upstream gets its own requestState back (from the gateway's seal), never the seal."""
    params = upstream_params(params)
    if era is Era.SESSION:
        return {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
    if "requestState" in params:
        params = {k: v for k, v in params.items() if k != "requestState"}
        if upstream_state is not None:
            params["requestState"] = upstream_state
    return params
