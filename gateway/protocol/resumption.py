"""Resumable SSE streams of the session era (Streamable HTTP, "Resumability and Redelivery").

Every event a session-era stream sends carries an id `<stream key>-<n>`: the key (16 hex digits) is a random prefix
per session and a counter per stream, n counts that stream's events from 1 (0 is the priming event). The session
keeps what it sent in one replay buffer, capped in events and bytes across its streams, oldest dropped first, so a
GET with `Last-Event-ID` gets the rest of that one stream and then its live events. Ids are looked up only among the
requesting session's own streams: another session's id is unknown here, whoever sends it.

A finished stream (its final response recorded) stays resumable for PORTCULLIS_SSE_REPLAY_TTL_S, then it and its
events are forgotten; everything goes when the session ends.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import time
from collections import deque

from django.conf import settings

from gateway.protocol import jsonrpc
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.streams import KEEPALIVE, KEEPALIVE_MESSAGE, Channel, sse_event

EVENT_ID = re.compile(r"([0-9a-f]{16})-(0|[1-9][0-9]{0,15})")
PRIMING_SINCE = "2025-11-25"  # earlier clients may choke on an event without data


class ResumableStream(Channel):
    """One SSE stream of a session (a POST's answer or the GET stream); what it sends is kept for replay."""

    def __init__(self, replay: Replay, *, priming: bool) -> None:
        super().__init__()
        self.replay = replay
        self.key = replay.register(self)
        self.seq = 0  # the last event's number
        self.dropped_through = 0  # events up to this number are no longer kept
        self.finished_at: float | None = None
        self._priming = priming
        if replay.closed:  # the session ended in the meantime
            self.close()

    def event_id(self, seq: int) -> str:
        return f"{self.key}-{seq}"

    def priming(self) -> bytes | None:
        """An id with no data, so the agent can resume even before the first message (2025-11-25)."""
        return f"id: {self.event_id(0)}\ndata: \n\n".encode() if self._priming else None

    def _write(self, message: dict) -> None:
        if message is KEEPALIVE_MESSAGE:  # a comment, not an event: never kept
            if self.feed is not None:
                self.feed.put_nowait(KEEPALIVE)
            return
        self.seq += 1
        frame = sse_event(jsonrpc.dumps(message), self.event_id(self.seq))
        self.replay.keep(self, self.seq, frame)
        if self.feed is not None:
            self.feed.put_nowait(frame)

    def finish(self, final: dict | None) -> None:
        if self.closed:
            return
        if final is None:  # cancelled: no response will follow, so there is nothing to resume
            self.discard()
            return
        self._write(final)
        self.finished_at = time.monotonic()
        self.close()

    def discard(self) -> None:
        """Nobody can resume this stream (a plain JSON answer, a cancelled call, an agent gone before any id)."""
        self.close()
        self.replay.forget(self)

    def resume(self, after: int) -> asyncio.Queue:
        """A new reader takes the stream over: the events after `after`, then live ones until it ends.
        A previous reader's response ends (a client resumes because it lost that one)."""
        if self.feed is not None:
            self.feed.put_nowait(None)
        feed: asyncio.Queue[bytes | None] = asyncio.Queue()
        for frame in self.replay.frames(self, after):
            feed.put_nowait(frame)
        if self.closed:
            feed.put_nowait(None)
            self.feed = None
        else:
            self.feed = feed
        return feed


class Replay:
    """The events one session sent on its resumable streams, in order, within the configured caps."""

    def __init__(self) -> None:
        self.max_events = settings.PORTCULLIS_SSE_REPLAY_MAX_EVENTS
        self.max_bytes = settings.PORTCULLIS_SSE_REPLAY_MAX_BYTES
        self.ttl = settings.PORTCULLIS_SSE_REPLAY_TTL_S
        self.events: deque[tuple[ResumableStream, int, bytes]] = deque()
        self.size = 0
        self.streams: dict[str, ResumableStream] = {}
        self.closed = False
        # Stream keys: a random prefix per session and a counter (a fresh random key per POST cost more than the
        # rest of the stream's set-up); unique in the session, and ids are only looked up among its own streams.
        self._prefix = secrets.token_hex(4)
        self._next = itertools.count(1)

    def register(self, stream: ResumableStream) -> str:
        key = f"{self._prefix}{next(self._next) % 0x100000000:08x}"
        if not self.closed:
            self.streams[key] = stream
        return key

    def keep(self, stream: ResumableStream, seq: int, frame: bytes) -> None:
        if self.closed:
            return
        self.events.append((stream, seq, frame))
        self.size += len(frame)
        while self.events and (len(self.events) > self.max_events or self.size > self.max_bytes):
            old, old_seq, old_frame = self.events.popleft()
            self.size -= len(old_frame)
            old.dropped_through = old_seq
            if old.closed and old_seq == old.seq:  # a finished stream with nothing left to replay
                self._unregister(old)

    def frames(self, stream: ResumableStream, after: int) -> list[bytes]:
        return [frame for owner, seq, frame in self.events if owner is stream and seq > after]

    def forget(self, stream: ResumableStream) -> None:
        self._unregister(stream)
        if stream.seq > stream.dropped_through:  # it still has events here
            self._drop(lambda owner: owner is stream)

    def expire(self, now: float) -> None:
        """Finished streams past the TTL are forgotten, with their events."""
        old = {s for s in self.streams.values() if s.finished_at is not None and now - s.finished_at > self.ttl}
        if old:
            for stream in old:
                self._unregister(stream)
            self._drop(lambda owner: owner in old)

    def close(self) -> None:
        """The session ended: every stream ends and every event is freed."""
        self.closed = True
        for stream in list(self.streams.values()):
            stream.close()
        self.streams.clear()
        self.events.clear()
        self.size = 0

    def find(self, last_event_id: str, now: float) -> tuple[ResumableStream, int]:
        """The stream a Last-Event-ID names, and the event to resume after; refused with a reason otherwise."""
        match = EVENT_ID.fullmatch(last_event_id)
        if match is None:
            raise RpcError(jsonrpc.INVALID_REQUEST, (
                f"Last-Event-ID {last_event_id[:80]!r} is not an event id of this gateway (they look like "
                "<16 hex digits>-<number>): resume with the id of the last event you received, or open a GET "
                "stream without Last-Event-ID"))
        self.expire(now)
        stream, seq = self.streams.get(match[1]), int(match[2])
        if stream is None or seq > stream.seq:
            raise RpcError(jsonrpc.STREAM_NOT_FOUND, (
                f"no stream of this session sent event {last_event_id!r}: the id is unknown, belongs to another "
                f"session, or its stream finished more than {self.ttl} s ago. Nothing can be replayed; if it "
                "answered a request, the request may already have run: check before sending it again"))
        if seq < stream.dropped_through:
            raise RpcError(jsonrpc.STREAM_NOT_FOUND, (
                f"the events after {last_event_id!r} are no longer kept (a session keeps its latest "
                f"{self.max_events} events, {self.max_bytes} bytes at most), so the stream cannot be resumed; "
                "if it answered a request, the request may already have run: check before sending it again"))
        return stream, seq

    def _unregister(self, stream: ResumableStream) -> None:
        if self.streams.get(stream.key) is stream:
            del self.streams[stream.key]

    def _drop(self, doomed) -> None:
        self.events = deque(event for event in self.events if not doomed(event[0]))
        self.size = sum(len(event[2]) for event in self.events)
