"""Agent sessions (session era) and the shared upstream links that stateless-era agents use.

Each session-era agent session gets its own upstream session (link): server→client requests and progress
can then only belong to that agent. Stateless-era agents share one link per server. Both live in this
process's memory; a session id is bound to the grant whose token opened it. A session's SSE streams are
resumable (gateway/protocol/resumption.py); their replay buffer is freed when the session ends.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from django.conf import settings

from gateway import tokens
from gateway.models import Server
from gateway.protocol import jsonrpc
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.resumption import PRIMING_SINCE, Replay, ResumableStream
from gateway.protocol.streams import Channel
from gateway.upstream.link import UpstreamLink

IDLE_SESSION_S = 30 * 60  # a session nobody used for this long is closed, with its upstream


@dataclass
class AgentSession:
    id: str
    grant_id: int
    token_digest: str
    server_id: int
    slug: str
    protocol_version: str
    link: UpstreamLink
    last_used: float = field(default_factory=time.monotonic)
    inflight: dict[object, asyncio.Task] = field(default_factory=dict)
    # Where messages for the agent go: the answers of POSTs in flight (newest last), or the GET stream.
    channels: list[Channel] = field(default_factory=list)
    get_stream: Channel | None = None
    # Server→client requests relayed to the agent, waiting for its answer, by the id the gateway gave them.
    asked: dict[str, asyncio.Future] = field(default_factory=dict)
    # What this session's streams sent, for Last-Event-ID.
    replay: Replay = field(default_factory=Replay)

    def owned_by(self, token: str) -> bool:
        return tokens.matches(token, self.token_digest)

    def new_stream(self) -> ResumableStream:
        return ResumableStream(self.replay, priming=self.protocol_version >= PRIMING_SINCE)

    def open_server_stream(self) -> tuple[Channel, asyncio.Queue]:
        """A GET without Last-Event-ID: a new stream for messages not tied to a request, and its feed.
        A previous one nobody reads any more is dropped (the agent chose not to resume it)."""
        if self.replay.closed:  # ended while the request was being authorised
            raise RpcError(jsonrpc.SESSION_NOT_FOUND, "unknown or ended session: initialize again")
        current = self.get_stream
        if current is not None and not current.closed:
            if current.feed is not None or not isinstance(current, ResumableStream):
                raise RpcError(jsonrpc.INVALID_REQUEST, "this session already has a GET stream open")
            current.discard()
        stream = self.get_stream = self.new_stream()
        return stream, stream.feed

    def resume(self, last_event_id: str) -> tuple[Channel, asyncio.Queue]:
        """A GET with Last-Event-ID: that stream of this session from the event after it, and its feed."""
        stream, after = self.replay.find(last_event_id, time.monotonic())
        return stream, stream.resume(after)

    def outlet(self) -> Channel | None:
        """The channel a message not tied to a known request should take. A stream whose reader left still
        takes messages (they are kept for the agent to resume it)."""
        live = [c for c in self.channels if not c.closed]
        if live:
            return live[-1]
        if self.get_stream is not None and not self.get_stream.closed:
            return self.get_stream
        return None


class Registry:
    def __init__(self) -> None:
        self.sessions: dict[str, AgentSession] = {}
        self.shared: dict[int, UpstreamLink] = {}
        # Session-era upstreams, listed for stateless-era agents that declared sampling/elicitation/roots: one link
        # per (server, declared set), so the upstream offers exactly the tools such an agent could use (at most
        # seven per server). Only listings go through these; calls get a link of their own (parked_calls.py).
        self.listing: dict[tuple[int, tuple[str, ...]], UpstreamLink] = {}
        self._shared_locks: dict[int, asyncio.Lock] = {}
        self._sweeper: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()

    def new_id(self) -> str:
        return secrets.token_urlsafe(24)

    def get(self, session_id: str, slug: str) -> AgentSession | None:
        session = self.sessions.get(session_id)
        if session is None or session.slug != slug:
            return None
        session.last_used = time.monotonic()
        return session

    async def make_room(self, grant_id: int) -> None:
        """Room for one more session of this grant: at the grant's cap its own oldest idle session is closed;
        when all of them are busy, or the process is full, RpcError TOO_MANY_SESSIONS says what to do. Another
        grant's sessions are never touched."""
        own = [s for s in self.sessions.values() if s.grant_id == grant_id]
        cap = settings.PORTCULLIS_SESSIONS_PER_GRANT
        if len(own) >= cap:
            idle = [s for s in own if not s.inflight]
            if not idle:
                raise RpcError(jsonrpc.TOO_MANY_SESSIONS,
                               f"this grant has {cap} sessions open on this gateway process, all busy: end one "
                               "(HTTP DELETE with its Mcp-Session-Id) or wait for a call to finish")
            await self.end(min(idle, key=lambda s: s.last_used).id)
        if len(self.sessions) >= settings.PORTCULLIS_SESSIONS_MAX:
            raise RpcError(jsonrpc.TOO_MANY_SESSIONS,
                           "this gateway process holds as many sessions as it may; try again shortly "
                           "(or use the stateless era, which needs no session)")

    async def add(self, session: AgentSession) -> None:
        """Register a session (raises like make_room when there is no room for it)."""
        self._ensure_sweeper()
        await self.make_room(session.grant_id)
        self.sessions[session.id] = session

    async def end(self, session_id: str, reason: str = "cancelled: the agent's session ended") -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        for task in list(session.inflight.values()):
            task.cancel(reason)  # recorded as the call's outcome (gateway/protocol/forwarded_call.py)
        for future in session.asked.values():
            future.cancel()
        if session.get_stream is not None:
            session.get_stream.close()
        session.replay.close()
        await session.link.close()
        return True

    async def shared_link(self, server: Server) -> UpstreamLink:
        """The link stateless-era agents share for one server; (re)started on demand."""
        lock = self._shared_locks.setdefault(server.pk, asyncio.Lock())
        async with lock:
            link = self.shared.get(server.pk)
            if link is None or _config_changed(link.server, server):
                if link is not None:  # closes once its requests in flight are done
                    closing = asyncio.create_task(link.close())
                    self._closing.add(closing)
                    closing.add_done_callback(self._closing.discard)
                link = self.shared[server.pk] = UpstreamLink(server)
            await link.ensure()
            return link

    async def listing_link(self, server: Server, capabilities: dict) -> UpstreamLink:
        """The link that lists a session-era upstream for stateless-era agents declaring `capabilities`."""
        key = (server.pk, tuple(sorted(capabilities)))
        lock = self._shared_locks.setdefault(key, asyncio.Lock())
        async with lock:
            link = self.listing.get(key)
            if link is None or _config_changed(link.server, server):
                if link is not None:
                    closing = asyncio.create_task(link.close())
                    self._closing.add(closing)
                    closing.add_done_callback(self._closing.discard)
                link = self.listing[key] = UpstreamLink(server, ask_agent=_no_questions,
                                                        agent_capabilities=capabilities)
            await link.ensure()
            return link

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="portcullis:session-sweeper")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(60)
            now = time.monotonic()
            for session in self.sessions.values():
                session.replay.expire(now)
            cutoff = now - IDLE_SESSION_S
            for session_id in [s.id for s in self.sessions.values() if s.last_used < cutoff and not s.inflight]:
                await self.end(session_id, "cancelled: the session was idle too long")


async def _no_questions(method: str, params: dict, channel=None) -> dict:
    """A listing link belongs to no call: a question on it cannot reach any agent."""
    raise RuntimeError(f"{method} arrived outside a tool call; the gateway relays questions only during a call")


def _config_changed(old: Server, new: Server) -> bool:
    return (old.transport, old.command, old.url, old.env_sealed, old.headers_sealed, old.updated_at) != (
        new.transport, new.command, new.url, new.env_sealed, new.headers_sealed, new.updated_at)


REGISTRY = Registry()
