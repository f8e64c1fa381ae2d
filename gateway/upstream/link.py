"""One live MCP connection to an upstream, owned by one long-lived task.

anyio cancel scopes must exit in the task that entered them, so the SDK `Client` is entered and exited by
the link's own task; request handlers in other tasks send through its dispatcher concurrently. The link
speaks whichever era the upstream speaks (the SDK probes `server/discover` and falls back to `initialize`),
which is how agents of either era reach upstreams of either era.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from typing import Any

from mcp import Client, types
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CONNECTION_CLOSED
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.models import Server
from gateway.redaction import redact_server_text
from gateway.telemetry import metrics
from gateway.upstream import fastpath
from gateway.upstream.connect import UpstreamError, open_transport
from gateway.upstream.stdio_pipe import StdioPipe

log = logging.getLogger("portcullis.upstream")

CONNECT_TIMEOUT_S = 30  # spawning a stdio server (npx, uvx) can take a while on first use
RESTART_BACKOFF_S = (0.0, 0.5, 1, 2, 5, 10, 30)  # delay before the n-th consecutive restart
STDERR_TAIL_BYTES = 2000
STABLE_AFTER_S = 60  # a link that lived this long before dying restarts without accumulated backoff

NotificationHandler = Callable[[dict], Awaitable[None]]
# Relays a server→client request to the agent: (method, params) → the agent's raw JSON-RPC answer message.
AgentAsker = Callable[[str, dict], Awaitable[dict]]

# What the gateway may declare upstream on the agent's behalf, and the result type of each request.
_SERVER_REQUESTS = {
    "sampling": ("sampling/createMessage", types.CreateMessageResult),
    "elicitation": ("elicitation/create", types.ElicitResult),
    "roots": ("roots/list", types.ListRootsResult),
}


class UpstreamLink:
    def __init__(self, server: Server, on_notification: NotificationHandler | None = None,
                 ask_agent: AgentAsker | None = None, agent_capabilities: dict | None = None) -> None:
        # `server` is a detached snapshot (env/headers decrypted in the sync world); no ORM use in here.
        self.server = server
        self.on_notification = on_notification
        self.ask_agent = ask_agent
        # The upstream is told the agent can answer sampling/elicitation/roots only if the agent said so: what
        # exists upstream (e.g. server-everything's sampling tools) depends on it.
        self.agent_capabilities = agent_capabilities or {}
        self._declared = declarable(self.agent_capabilities)
        # Relaying the upstream's questions to the agent needs the SDK's dispatcher for the call.
        self._relays = bool(self._callbacks())
        self._client: Client | None = None
        self._pipe: StdioPipe | None = None  # a stdio server's pipes, for direct requests
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
        self._broken = False  # the connection reported itself closed; the owner task may not have ended yet
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.failures = 0
        self.started_at = 0.0

    # --- lifecycle ---
    async def start(self) -> None:
        self._ready.clear()
        self._stop.clear()
        self._error = None
        self._broken = False
        if self._errlog.closed:
            self._errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
        self.started_at = time.monotonic()
        self._task = asyncio.create_task(self._own(), name=f"upstream:{self.server.slug}")
        try:
            await asyncio.wait_for(self._ready.wait(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            await self.close()
            raise UpstreamError(f"{self.server.slug}: no handshake within {CONNECT_TIMEOUT_S} s") from None
        if self._client is None:
            raise UpstreamError(self.death_report())

    async def _own(self) -> None:
        try:
            callbacks = self._callbacks()
            # An agent that can answer sampling/elicitation/roots gets a session-era upstream session, where
            # the upstream may ask it mid-call (a dual-era server's push-style asks only work there); an upstream
            # that refuses the session era is then reached in the stateless era, where its input_required
            # results are bridged to the agent (protocol/input_bridge.py). Otherwise the SDK picks the newest era.
            modes = ("legacy", "auto") if callbacks else ("auto",)
            for mode in modes:
                try:
                    transport = open_transport(self.server, errlog=self._errlog, on_pipe=self._set_pipe)
                    async with Client(transport, mode=mode, cache=None,
                                      message_handler=self._on_message, **callbacks) as client:
                        self._client = client
                        self._ready.set()
                        await self._stop.wait()
                    return
                except Exception as exc:
                    if self._client is not None or mode == modes[-1] or not _refused(exc):
                        raise
                    log.info("upstream %s refused a session-era handshake (%s); trying the stateless era",
                             self.server.slug, _describe(exc))
        except BaseException as exc:  # noqa: BLE001 - any death is recorded and reported, never raised here
            self._error = exc
            log.warning("upstream %s died: %s", self.server.slug, self.death_report())
        finally:
            self._client = None
            self._pipe = None
            self._ready.set()

    def _set_pipe(self, pipe: StdioPipe) -> None:
        self._pipe = pipe

    async def close(self) -> None:
        # Never close an upstream under a request in flight (stdio servers drop them when stdin closes).
        if self._inflight:
            try:
                await asyncio.wait_for(self._idle.wait(), self.server.timeout_seconds)
            except TimeoutError:
                log.warning("closing upstream %s with %d requests still in flight", self.server.slug, self._inflight)
        self._stop.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        self._errlog.close()

    @property
    def alive(self) -> bool:
        return not self._broken and self._client is not None and self._task is not None and not self._task.done()

    async def ensure(self) -> None:
        """Start, or restart after a death with backoff; raises UpstreamError when it cannot."""
        if self.alive:
            return
        if self._task is not None:
            # Consecutive deaths back off; a link that lived a while starts counting again.
            self.failures = 1 if time.monotonic() - self.started_at > STABLE_AFTER_S else self.failures + 1
            self._stop.set()  # let the old owner task finish its exit before a new process starts
            await asyncio.wait({self._task}, timeout=5)
            await asyncio.sleep(RESTART_BACKOFF_S[min(self.failures, len(RESTART_BACKOFF_S) - 1)])
            metrics.UPSTREAM_RESTARTS.labels(self.server.slug).inc()
        await self.start()

    def death_report(self) -> str:
        what = _describe(self._error) if self._error else "connection closed"
        message = f"upstream {self.server.slug!r} ({self.server.target_display()}) is unavailable: {what}"
        try:
            self._errlog.flush()
            self._errlog.seek(0)
            tail = self._errlog.read()[-STDERR_TAIL_BYTES:].strip()
            self._errlog.seek(0, 2)
        except (OSError, ValueError):
            tail = ""
        if tail:
            message += f"\nlast lines on stderr:\n{tail}"
        return redact_server_text(self.server, message)

    # --- what the upstream said at the handshake ---
    @property
    def client(self) -> Client:
        if self._client is None:
            raise UpstreamError(self.death_report())
        return self._client

    def capabilities(self) -> dict:
        return self.client.server_capabilities.model_dump(by_alias=True, exclude_none=True, mode="json")

    def instructions(self) -> str | None:
        return self.client.instructions

    @property
    def protocol_version(self) -> str:
        return self.client.protocol_version

    # --- traffic ---
    async def request(self, method: str, params: dict | None, *, timeout: float,
                      on_progress: Callable | None = None, client_capabilities: dict | None = None) -> dict:
        """Send one request; returns the raw result dict. Raises MCPError (upstream error, timeout) or
        UpstreamError (connection gone). On timeout the SDK sends notifications/cancelled upstream.

        `client_capabilities`: a stateless-era agent's own declaration for this request (the link is shared, so
        its agents' capabilities differ per request); None means the link's agent (its session's)."""
        session = self.client.session
        data: dict[str, Any] = {"method": method, "params": dict(params or {})}
        opts: dict[str, Any] = {"timeout": timeout}
        if on_progress is not None:
            opts["on_progress"] = on_progress
        session._stamp(data, opts)  # the era's envelope: _meta and routing headers (stateless era) or nothing
        meta = data["params"].get("_meta")
        if (self._declared or client_capabilities is not None) and isinstance(meta, dict) \
                and CLIENT_CAPABILITIES_META_KEY in meta:
            # Stateless era: tell the upstream exactly what the agent declared (the SDK would stamp what its
            # callbacks can do), so it asks only what the agent can answer. Replaced, never mutated: the SDK's
            # dict is shared by every request of the link. The direct path below sends these same params.
            meta[CLIENT_CAPABILITIES_META_KEY] = (self._declared if client_capabilities is None
                                                  else declarable(client_capabilities))
        if on_progress is None and not self._relays:
            if self._pipe is not None:
                return await self._direct_stdio(self._pipe, method, data["params"], timeout)
            if self._direct_http():
                return await self._direct(method, data["params"], opts.get("headers", {}), timeout)
        with self._in_flight():
            return await session._dispatcher.send_raw_request(method, data.get("params"), opts)

    @contextmanager
    def _in_flight(self):
        """Counts a request in flight (close() waits for none) and maps failures to what the relay expects."""
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._broken = True  # the next ensure() restarts it
            raise
        except Exception as exc:
            raise UpstreamError(f"{self.server.slug}: {_describe(exc)}") from None
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    def _direct_http(self) -> bool:
        return (self.server.transport == Server.Transport.HTTP and self.protocol_version in MODERN_PROTOCOL_VERSIONS
                and fastpath.available(self.server))

    async def _direct_stdio(self, pipe: StdioPipe, method: str, params: dict, timeout: float) -> dict:
        """Written on the pipe, answered by id (`stdio_pipe.py`); on timeout or cancellation the server is told, as
        the SDK would tell it."""
        async def abandon(request_id: str, reason: str) -> None:
            await self.notify("notifications/cancelled", {"requestId": request_id, "reason": reason})

        with self._in_flight():
            return await pipe.request(method, params, timeout, abandon)

    async def _direct(self, method: str, params: dict, headers: dict, timeout: float) -> dict:
        with self._in_flight():
            return await fastpath.post(self.server, method, params, headers, timeout)

    async def notify(self, method: str, params: dict | None) -> None:
        session = self.client.session
        data: dict[str, Any] = {"method": method, "params": dict(params or {})}
        opts: dict[str, Any] = {}
        session._stamp(data, opts)
        await session._dispatcher.notify(method, data.get("params"), opts)

    def _callbacks(self) -> dict:
        if self.ask_agent is None:
            return {}
        out: dict[str, Any] = {}
        if "sampling" in self.agent_capabilities:
            out["sampling_callback"] = lambda ctx, params: self._relay_request("sampling", params)
        if "elicitation" in self.agent_capabilities:
            out["elicitation_callback"] = lambda ctx, params: self._relay_request("elicitation", params)
        if "roots" in self.agent_capabilities:
            out["list_roots_callback"] = lambda ctx: self._relay_request("roots", None)
        return out

    async def _relay_request(self, capability: str, params: Any) -> Any:
        method, result_type = _SERVER_REQUESTS[capability]
        raw_params = params.model_dump(by_alias=True, exclude_none=True, mode="json") if params is not None else {}
        try:
            answer = await self.ask_agent(method, raw_params)
        except Exception as exc:  # no channel to the agent, a timeout: the upstream gets an error, not a hang
            return types.ErrorData(code=types.INTERNAL_ERROR, message=f"gateway could not ask the agent: {exc}")
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            return types.ErrorData(code=int(error.get("code", types.INTERNAL_ERROR)),
                                   message=str(error.get("message", "agent error")), data=error.get("data"))
        try:
            return result_type.model_validate(answer.get("result") or {}, by_name=False)
        except Exception as exc:
            return types.ErrorData(code=types.INVALID_PARAMS, message=f"agent answered {method} badly: {exc}")

    async def _on_message(self, message: Any) -> None:
        if self.on_notification is None or isinstance(message, Exception):
            return
        try:
            raw = message.model_dump(by_alias=True, exclude_none=True, mode="json")
            await self.on_notification(raw)
        except Exception:  # a listener's fault must not break the upstream connection
            log.exception("notification handler failed for %s", self.server.slug)


def declarable(capabilities: object) -> dict:
    """The part of an agent's client capabilities the gateway passes upstream: sampling, elicitation and roots
    (the questions the gateway relays and audits). Experimental keys, tasks and anything unknown are dropped:
    the gateway cannot police what it does not understand."""
    if not isinstance(capabilities, dict):
        return {}
    return {name: value for name, value in capabilities.items() if name in _SERVER_REQUESTS and isinstance(value, dict)}


def _refused(exc: BaseException) -> bool:
    """The upstream answered the handshake with a refusal (a JSON-RPC or HTTP error), not a transport failure."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_refused(e) for e in exc.exceptions)
    return isinstance(exc, MCPError) and exc.code != CONNECTION_CLOSED


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
