"""Strict JSON-RPC 2.0 message parsing for the agent-facing endpoint, and the error → HTTP status table.

Stricter than json.loads: duplicate keys, NaN/Infinity, lone surrogates, invalid UTF-8, batches and absurd
nesting are refused, because a policy gateway and its upstream must never read the same bytes differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
HEADER_MISMATCH = -32020  # 2026-07-28: Mcp-Method / Mcp-Name / MCP-Protocol-Version disagree with the body
UNSUPPORTED_PROTOCOL_VERSION = -32022
# Gateway-specific codes (the -32000..-32099 server range).
UNAUTHORIZED = -32001
FORBIDDEN = -32003
SESSION_NOT_FOUND = -32004
PAYLOAD_TOO_LARGE = -32005
STREAM_NOT_FOUND = -32006  # Last-Event-ID names no stream, or no events, this session still keeps
UPSTREAM_UNAVAILABLE = -32010
GATEWAY_UNAVAILABLE = -32012  # the gateway's own database (its audit log and policy) cannot be reached
TOO_MANY_SESSIONS = -32013  # the grant (or this process) holds as many sessions or streams as it may
POLICY_DENIED = -32014  # a resource read, prompt or completion the policy refuses (the message says why)

# One table maps every JSON-RPC error the gateway produces to its HTTP status.
HTTP_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
    UNAUTHORIZED: 401,
    FORBIDDEN: 403,
    SESSION_NOT_FOUND: 404,
    PAYLOAD_TOO_LARGE: 413,
    STREAM_NOT_FOUND: 404,
    GATEWAY_UNAVAILABLE: 503,
    TOO_MANY_SESSIONS: 429,
    POLICY_DENIED: 200,  # an answer about the request, not about the HTTP exchange
}

MAX_DEPTH = 64  # deeper JSON is refused: no MCP message needs it, and deep values cost stack everywhere


@dataclass(frozen=True)
class RpcError(Exception):
    code: int
    message: str
    data: Any = None
    id: Any = None

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 200)

    def body(self) -> dict:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": self.id, "error": error}


@dataclass(frozen=True)
class Message:
    """A request (id set), a notification (no id) or a response (result/error) from the agent."""

    raw: dict
    id: Any
    method: str | None

    @property
    def is_request(self) -> bool:
        return self.method is not None and "id" in self.raw

    @property
    def is_notification(self) -> bool:
        return self.method is not None and "id" not in self.raw

    @property
    def params(self) -> dict:
        return self.raw.get("params") or {}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise RpcError(PARSE_ERROR, f"duplicate key {key!r} in JSON object")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise RpcError(PARSE_ERROR, f"{name} is not valid JSON")


def _check_tree(value: Any) -> None:
    """Depth limit and lone-surrogate check in one iterative walk (keys included)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                raise RpcError(INVALID_REQUEST, f"JSON nested deeper than {MAX_DEPTH} levels")
            if isinstance(node, dict):
                for key, item in node.items():
                    _check_text(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in node)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RpcError(PARSE_ERROR, "string contains a lone surrogate (\\ud800-\\udfff escape)") from None


def parse(body: bytes) -> Message:
    """Parse one JSON-RPC message from an HTTP body, or raise RpcError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RpcError(PARSE_ERROR, "body is not valid UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RpcError:
        raise
    except RecursionError:
        raise RpcError(INVALID_REQUEST, f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise RpcError(PARSE_ERROR, f"invalid JSON: {exc}") from None
    if isinstance(value, list):
        raise RpcError(INVALID_REQUEST, "JSON-RPC batches are not supported (removed in protocol 2025-06-18)")
    if not isinstance(value, dict):
        raise RpcError(INVALID_REQUEST, "a JSON-RPC message must be a JSON object")
    if _walk_needed(text):
        _check_tree(value)
    return _envelope(value)


def _walk_needed(text: str) -> bool:
    """Whether _check_tree can find anything in this text: a lone surrogate comes only from a \\ud800-\\udfff
    escape (strict UTF-8 decodes to none), and nesting deeper than MAX_DEPTH takes more than MAX_DEPTH brackets."""
    return "\\ud" in text or "\\uD" in text or text.count("{") + text.count("[") > MAX_DEPTH


def _envelope(value: dict) -> Message:
    msg_id = value.get("id")
    if "id" in value and (isinstance(msg_id, bool) or not isinstance(msg_id, (str, int))):
        raise RpcError(INVALID_REQUEST, "id must be a string or an integer")
    if value.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'jsonrpc must be "2.0"', id=msg_id)
    method = value.get("method")
    if method is None:
        if "id" not in value or ("result" in value) == ("error" in value):
            raise RpcError(INVALID_REQUEST, "a message needs a method, or an id with exactly one of result/error")
        return Message(value, msg_id, None)
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "method must be a non-empty string", id=msg_id)
    if "params" in value and not isinstance(value["params"], dict):
        raise RpcError(INVALID_PARAMS, "params must be a JSON object", id=msg_id)
    if "_meta" in value.get("params", {}) and not isinstance(value["params"]["_meta"], dict):
        raise RpcError(INVALID_PARAMS, "params._meta must be a JSON object", id=msg_id)
    return Message(value, msg_id, method)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def result(msg_id: Any, value: dict) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "result": value}
