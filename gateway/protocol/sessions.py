"""Agent sessions (session era) as this process serves them, and the upstream links they use.

A session is a database row (gateway/calls/session_records.py) that any gateway process can serve: the process a
request reaches holds a view of it (AgentSession), loaded on its first request there. Upstream sessions are
pooled: a session that needs nothing private uses the process's **shared link** for its server, as stateless-era
agents do (one upstream session, for stdio one process, per server and process, multiplexing concurrent calls). A
session is **private** (a link of its own) only when its agent declared sampling, elicitation or roots that the
server may use (Server.allow_*), or the server isolates sessions; another process serving it opens its own link
for it. Views are checked against the rows every PORTCULLIS_SESSION_RECHECK_S: a session ended anywhere stops
here within that time. A session id is bound to the grant whose token opened it. A session's SSE streams are
resumable on the process that sent them (gateway/protocol/resumption.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from gateway import tokens
from gateway.calls import dbthreads, session_records
from gateway.calls.audit import WORKER_ID
from gateway.calls.session_records import SessionRecord
from gateway.models import Server
from gateway.protocol import answers, jsonrpc
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.resumption import PRIMING_SINCE, Replay, ResumableStream
from gateway.protocol.streams import Channel
from gateway.telemetry import metrics
from gateway.upstream.link import UpstreamLink, declarable

log = logging.getLogger("portcullis.sessions")

_open_record = dbthreads.hop(session_records.open_session)
_find_record = dbthreads.hop(session_records.find)
_still_open = dbthreads.hop(session_records.still_open)
_end_record = dbthreads.hop(session_records.end)


@dataclass
class AgentSession:
    id: str
    grant_id: int
    token_digest: str
    server_id: int
    slug: str
    protocol_version: str
    link: UpstreamLink
    private: bool = False  # the link is this session's own (else the process's shared link for the server)
    legacy: bool = False  # an HTTP+SSE stream's session: it lives on the stream's process
    capabilities: dict = field(default_factory=dict)
    last_used: float = field(default_factory=time.monotonic)
    recorded_use: float = field(default_factory=time.monotonic)  # last_used when the row was last touched
    inflight: dict[object, asyncio.Task] = field(default_factory=dict)
    # Where messages for the agent go: the answers of POSTs in flight (newest last), or the GET stream.
    channels: list[Channel] = field(default_factory=list)
    get_stream: Channel | None = None
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


def session_kind(server: Server, capabilities: dict) -> tuple[bool, dict]:
    """Whether a session with these declared client capabilities needs an upstream session of its own, and what
    its upstream is told the agent can do: only the server→client requests the server may use."""
    allowed = server.allowed_client_capabilities()
    declared = {name: value for name, value in declarable(capabilities).items() if name in allowed}
    return bool(declared) or server.isolate_sessions, declared


NotificationSink = Callable[[str, dict], Awaitable[None]]
Asker = Callable[..., Awaitable[dict]]


class Registry:
    def __init__(self) -> None:
        self.sessions: dict[str, AgentSession] = {}  # this process's views, by session id
        self.shared: dict[int, UpstreamLink] = {}
        # Session-era upstreams, listed for stateless-era agents that declared sampling/elicitation/roots: one link
        # per (server, declared set), so the upstream offers exactly the tools such an agent could use (at most
        # seven per server). Only listings go through these; calls get a link of their own (parked_calls.py).
        self.listing: dict[tuple[int, tuple[str, ...]], UpstreamLink] = {}
        self._shared_locks: dict[object, asyncio.Lock] = {}
        self._sweeper: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        # Set by the relay: where a private link's notifications and questions go, and a shared link's notifications.
        self.on_notification: NotificationSink | None = None
        self.ask_agent: Asker | None = None
        self.on_shared_notification: Callable[[int, dict], Awaitable[None]] | None = None

    def new_id(self) -> str:
        return secrets.token_urlsafe(24)

    def get(self, session_id: str, slug: str) -> AgentSession | None:
        """This process's view of the session, if it holds one."""
        session = self.sessions.get(session_id)
        if session is None or session.slug != slug:
            return None
        now = time.monotonic()
        if now - session.last_used > settings.PORTCULLIS_SESSION_IDLE_S:
            return None  # idle past the limit here: find() asks the rows whether another process kept it alive
        session.last_used = now
        return session

    def private_count(self) -> int:
        return sum(1 for s in self.sessions.values() if s.private)

    def metrics_view(self) -> tuple[dict[str, int], dict[str, int], list[tuple[str, bool]]]:
        """What /metrics reads of this process (gateway/telemetry/metrics.py)."""
        sessions: dict[str, int] = {}
        for session in list(self.sessions.values()):
            sessions[session.server.slug] = sessions.get(session.server.slug, 0) + 1
        return sessions, self.upstream_counts(), [(link.server.slug, link.alive) for link in list(self.shared.values())]

    def upstream_counts(self) -> dict[str, int]:
        """Upstream connections (for stdio, processes) this process holds, per server slug."""
        counts: dict[str, int] = {}
        links = [*self.shared.values(), *self.listing.values(),
                 *(s.link for s in self.sessions.values() if s.private)]
        for link in links:
            if link.alive:
                counts[link.server.slug] = counts.get(link.server.slug, 0) + 1
        return counts

    async def open(self, server: Server, grant_id: int, token: str, version: str, capabilities: dict,
                   session_id: str | None = None, legacy: bool = False,
                   get_stream: Channel | None = None) -> AgentSession:
        """A new session: stored for every process (making room in the grant's cap), then served here."""
        private, declared = session_kind(server, capabilities)
        if private and self.private_count() >= settings.PORTCULLIS_SESSIONS_MAX:
            raise RpcError(jsonrpc.TOO_MANY_SESSIONS,
                           "this gateway process holds as many private upstream sessions as it may; try again "
                           "shortly (or use the stateless era, which needs no session)")
        record = SessionRecord(id=session_id or self.new_id(), grant_id=grant_id, server_id=server.pk,
                               slug=server.slug, token_digest=tokens.digest(token), protocol_version=version,
                               capabilities=declared, private=private, legacy=legacy)
        link = await self._link_for(server, record)
        busy = frozenset(s.id for s in self.sessions.values() if s.inflight)
        try:
            refusal, ended = await _open_record(record, WORKER_ID, timezone.now(), busy)
        except BaseException:
            if private:
                await link.close()
            raise
        if refusal is not None:
            if private:
                await link.close()
            raise RpcError(jsonrpc.TOO_MANY_SESSIONS, refusal)
        for session_id in ended:  # this process's views of them go now; other processes' on their next check
            await self.drop(session_id, "cancelled: its grant opened too many sessions")
        return self._hold(record, link, get_stream)

    async def find(self, session_id: str, slug: str, server: Server, grant_id: int,
                   token: str) -> AgentSession | None:
        """This process's view of a session opened by any process, loaded when this is its first request here;
        None when the session is unknown, ended, idle too long, another server's or another grant's."""
        session = self.get(session_id, slug)
        if session is not None:
            return session if session.owned_by(token) else None
        record = await _find_record(session_id, slug, timezone.now())
        stale = self.sessions.get(session_id)
        if record is None or record.grant_id != grant_id or not tokens.matches(token, record.token_digest):
            if stale is not None and record is None:
                await self.drop(session_id, "cancelled: the session was idle too long")
            return None
        if stale is not None and stale.slug == slug:  # idle here, but used through another process meanwhile
            stale.last_used = time.monotonic()
            return stale
        if record.legacy:  # its stream, which carries every answer, is on the process that opened it
            return None
        if record.private and self.private_count() >= settings.PORTCULLIS_SESSIONS_MAX:
            raise RpcError(jsonrpc.GATEWAY_UNAVAILABLE, "this gateway process holds as many private upstream "
                                                        "sessions as it may; try again shortly")
        link = await self._link_for(server, record)
        session = self.sessions.get(session_id)  # another request of the session loaded it meanwhile
        if session is not None:
            if record.private:
                await link.close()
            return session
        return self._hold(record, link, None)

    def _hold(self, record: SessionRecord, link: UpstreamLink, get_stream: Channel | None) -> AgentSession:
        self._ensure_sweeper()
        session = AgentSession(id=record.id, grant_id=record.grant_id, token_digest=record.token_digest,
                               server_id=record.server_id, slug=record.slug, protocol_version=record.protocol_version,
                               link=link, private=record.private, legacy=record.legacy,
                               capabilities=record.capabilities, get_stream=get_stream)
        self.sessions[record.id] = session
        return session

    async def _link_for(self, server: Server, record: SessionRecord) -> UpstreamLink:
        if not record.private:
            return await self.shared_link(server)
        session_id = record.id
        link = UpstreamLink(
            server, on_notification=lambda raw: self.on_notification(session_id, raw),
            ask_agent=lambda method, params, channel=None: self.ask_agent(session_id, method, params, channel),
            agent_capabilities=record.capabilities)
        try:
            await link.start()
        except BaseException:
            await link.close()
            raise
        return link

    async def end(self, session_id: str, reason: str = "cancelled: the agent's session ended") -> bool:
        """End the session everywhere: its row, and this process's view (others drop theirs on their next check)."""
        ended_here = await self.drop(session_id, reason)
        try:
            ended = await _end_record(session_id, timezone.now(), reason.removeprefix("cancelled: "))
        except DatabaseError as exc:  # the idle limit ends it later; this process no longer serves it
            log.warning("session %s… ended here but not recorded: %s", session_id[:6], exc)
            ended = False
        return ended or ended_here

    async def drop(self, session_id: str, reason: str) -> bool:
        """This process's view goes: calls it runs are cancelled with `reason`, a private link closed."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        for task in list(session.inflight.values()):
            task.cancel(reason)  # recorded as the call's outcome (gateway/protocol/forwarded_call.py)
        answers.cancel_session(session_id)
        if session.get_stream is not None:
            session.get_stream.close()
        session.replay.close()
        if session.private:
            await session.link.close()
        return True

    async def shared_link(self, server: Server) -> UpstreamLink:
        """The link pooled sessions and stateless-era agents share for one server; (re)started on demand."""
        lock = self._shared_locks.setdefault(server.pk, asyncio.Lock())
        async with lock:
            link = self.shared.get(server.pk)
            if link is None or _config_changed(link.server, server):
                if link is not None:  # closes once its requests in flight are done
                    self._close_later(link)
                server_id = server.pk
                link = self.shared[server.pk] = UpstreamLink(
                    server, on_notification=lambda raw: self._shared_notification(server_id, raw))
            await link.ensure()
            return link

    async def _shared_notification(self, server_id: int, raw: dict) -> None:
        if self.on_shared_notification is not None:
            await self.on_shared_notification(server_id, raw)

    def _close_later(self, link: UpstreamLink) -> None:
        closing = asyncio.create_task(link.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def listing_link(self, server: Server, capabilities: dict) -> UpstreamLink:
        """The link that lists a session-era upstream for stateless-era agents declaring `capabilities`."""
        key = (server.pk, tuple(sorted(capabilities)))
        lock = self._shared_locks.setdefault(key, asyncio.Lock())
        async with lock:
            link = self.listing.get(key)
            if link is None or _config_changed(link.server, server):
                if link is not None:
                    self._close_later(link)
                link = self.listing[key] = UpstreamLink(server, ask_agent=_no_questions,
                                                        agent_capabilities=capabilities)
            await link.ensure()
            return link

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="portcullis:session-sweeper")

    async def _sweep(self) -> None:
        """Every few seconds: views of sessions ended elsewhere go, the others are marked used (for the idle limit,
        which any process enforces on the rows); views idle here past the limit go too (the row stays: another
        process may be serving it)."""
        while True:
            await asyncio.sleep(settings.PORTCULLIS_SESSION_RECHECK_S)
            try:
                await self.recheck()
            except Exception as exc:  # noqa: BLE001 - checked again next round
                log.warning("sessions not rechecked: %s", exc)

    async def recheck(self) -> None:
        now = time.monotonic()
        for session in self.sessions.values():
            session.replay.expire(now)
        idle = now - settings.PORTCULLIS_SESSION_IDLE_S
        for session_id in [s.id for s in self.sessions.values() if s.last_used < idle and not s.inflight]:
            await self.drop(session_id, "cancelled: the session was idle too long")
        ids = list(self.sessions)
        if not ids:
            return
        used = [s.id for s in self.sessions.values() if s.last_used > s.recorded_use or s.inflight]
        alive = await _still_open(ids, used, timezone.now())
        for session_id in used:
            if session_id in self.sessions:
                self.sessions[session_id].recorded_use = now
        for session_id in ids:
            if session_id not in alive and session_id in self.sessions:
                await self.drop(session_id, "cancelled: the agent's session ended")


async def _no_questions(method: str, params: dict, channel=None) -> dict:
    """A listing link belongs to no call: a question on it cannot reach any agent."""
    raise RuntimeError(f"{method} arrived outside a tool call; the gateway relays questions only during a call")


def _config_changed(old: Server, new: Server) -> bool:
    return (old.transport, old.command, old.url, old.env_sealed, old.headers_sealed, old.updated_at) != (
        new.transport, new.command, new.url, new.env_sealed, new.headers_sealed, new.updated_at)


REGISTRY = Registry()
metrics.provide_live(REGISTRY.metrics_view)
