"""Streaming every audit row to a syslog receiver (RFC 5424: TCP with octet-counting framing, RFC 6587, or UDP) or an
HTTP endpoint (JSON Lines POSTs), at least once, never slowing calls.

One sender in the whole gateway: the gateway process holding the stream's lease (an `AuditStream` row renewed every
few seconds; another process takes over when it lapses) reads rows after its cursor, on a thread of its own, and
moves the cursor only past what was delivered. A row is sent once it is settled (its outcome known), or once it has
been in flight for PORTCULLIS_AUDIT_STREAM_WAIT_S (sent as pending then); rows go in id order, and only rows older
than a few seconds, so a row whose transaction commits after a later id's (PostgreSQL assigns ids before commit)
is not skipped.

Delivered means: HTTP — a 2xx answer; TCP syslog — the receiver's host acknowledged every byte and the connection was
not reset after it (a receiver that restarts after reading what it was sent loses nothing; one that dies with unread
bytes resets the connection and they are sent again); UDP — sent (it has no acknowledgements: at most once).
Each message carries the row's id, chain position and digests, so the receiver holds the chain's anchors too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import socket
import struct
import threading
import time
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from gateway.models import AuditStream, Call

log = logging.getLogger("portcullis.audit_stream")

BATCH = 200
SETTLE_S = 3  # rows younger than this are left for the next round: their neighbours may still be committing
LEASE_S = 15
IDLE_S = 1.0
SIOCOUTQ = 0x5411  # Linux: bytes the peer has not acknowledged yet
SD_ID = "portcullis@32473"  # 32473: the enterprise number RFC 5612 reserves for documentation and examples
PROCESS = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class NotDelivered(Exception):
    """The destination did not take the batch: sent again from the cursor."""


def destination() -> str:
    return settings.PORTCULLIS_AUDIT_STREAM


def describe(url: str) -> str:
    """The destination without credentials, for logs and pages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.port else f"{parts.scheme}://{parts.hostname}"


# --- what is sent ---

# What each message carries of a row (read by due_rows, written by row_record).
STREAMED = ("id", "created_at", "grant_name", "server_slug", "tool_name", "via", "decision", "refusal", "reason",
            "rule", "counters", "outcome", "error", "latency_ms", "result_size", "finished_at", "argument_hash",
            "arguments", "chain", "seq", "digest", "outcome_digest")


def row_record(row: dict) -> dict:
    record = {k: row[k] for k in STREAMED}
    for key in ("created_at", "finished_at"):
        if isinstance(record[key], datetime):
            record[key] = record[key].isoformat(timespec="microseconds")
    return record


SEVERITY = {"ok": 6, "refused": 5, "pending": 6}  # informational, notice; failures are warnings (4)


def syslog_message(record: dict) -> bytes:
    """One RFC 5424 message: the row as JSON in MSG, its identity in structured data."""
    facility = settings.PORTCULLIS_AUDIT_STREAM_FACILITY
    severity = SEVERITY.get(record["outcome"], 4)
    stamp = record["created_at"].replace("+00:00", "Z")
    params = " ".join(f'{k}="{_sd_escape(str(record[k]))}"' for k in ("id", "chain", "seq", "digest")
                      if record[k] not in (None, ""))
    header = (f"<{facility * 8 + severity}>1 {stamp} {socket.gethostname()[:255] or '-'} portcullis {os.getpid()} "
              f"call [{SD_ID} {params}] ")
    return header.encode() + b"\xef\xbb\xbf" + json.dumps(record, ensure_ascii=False).encode()


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


# --- where it goes ---

class SyslogTcp:
    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock: socket.socket | None = None

    def send(self, messages: list[bytes]) -> None:
        if self.sock is not None:
            try:
                if self._not_reset() == b"":  # the receiver closed it while idle (e.g. it restarted)
                    self.close()
            except NotDelivered:
                self.close()
        if self.sock is None:
            try:
                self.sock = socket.create_connection(self.address, timeout=5)
            except OSError as exc:
                raise NotDelivered(f"cannot connect: {exc.strerror or exc}") from None
        framed = b"".join(str(len(m)).encode() + b" " + m for m in messages)
        try:
            self.sock.sendall(framed)
            self._acknowledged()
        except (OSError, NotDelivered) as exc:
            self.close()
            raise NotDelivered(str(exc) or type(exc).__name__) from None

    def _acknowledged(self, timeout: float = 10) -> None:
        """Every byte acknowledged by the receiver's host, and no reset after a moment (a reset means it closed
        with bytes unread: they were lost)."""
        deadline = time.monotonic() + timeout
        while _unacknowledged(self.sock):
            if self._not_reset() == b"":
                raise NotDelivered("the receiver closed the connection before reading everything")
            if time.monotonic() > deadline:
                raise NotDelivered("the receiver did not acknowledge the messages")
            time.sleep(0.005)
        time.sleep(0.05)
        if self._not_reset() == b"":  # it closed after reading everything: delivered; connect again next time
            self.close()

    def _not_reset(self) -> bytes | None:
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return None
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except ConnectionResetError:
            raise NotDelivered("the receiver reset the connection") from None
        except BlockingIOError:
            return None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


def _unacknowledged(sock: socket.socket) -> int:
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0  # not Linux: the kernel cannot say; delivered when written


class SyslogUdp:
    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, messages: list[bytes]) -> None:
        for message in messages:
            try:
                self.sock.sendto(message[:65000], self.address)
            except OSError as exc:
                raise NotDelivered(exc.strerror or str(exc)) from None

    def close(self) -> None:
        self.sock.close()


class HttpLines:
    def __init__(self, url: str) -> None:
        import httpx2

        headers = {"Content-Type": "application/x-ndjson"}
        if settings.PORTCULLIS_AUDIT_STREAM_TOKEN:
            headers["Authorization"] = f"Bearer {settings.PORTCULLIS_AUDIT_STREAM_TOKEN}"
        self.url, self.client = url, httpx2.Client(headers=headers, timeout=15, trust_env=False)

    def send(self, records: list[bytes]) -> None:
        try:
            response = self.client.post(self.url, content=b"\n".join(records) + b"\n")
        except Exception as exc:  # noqa: BLE001 - any transport failure: sent again
            raise NotDelivered(type(exc).__name__) from None
        if not 200 <= response.status_code < 300:
            raise NotDelivered(f"HTTP {response.status_code}")

    def close(self) -> None:
        self.client.close()


def open_destination(url: str):
    parts = urlsplit(url)
    if parts.scheme == "syslog+tcp":
        return SyslogTcp(parts.hostname, parts.port or 514), True
    if parts.scheme == "syslog+udp":
        return SyslogUdp(parts.hostname, parts.port or 514), True
    if parts.scheme in ("http", "https"):
        return HttpLines(url), False
    raise ValueError(f"{parts.scheme!r} is not a stream destination")


# --- the sender ---

def _take_lease(now: datetime) -> AuditStream | None:
    AuditStream.objects.get_or_create(id="default")
    free = Q(holder=PROCESS) | Q(lease_until__lt=now) | Q(lease_until__isnull=True)
    taken = AuditStream.objects.filter(free, id="default").update(holder=PROCESS,
                                                                  lease_until=now + timedelta(seconds=LEASE_S))
    return AuditStream.objects.get(id="default") if taken else None


def due_rows(after: int, now: datetime) -> list[dict]:
    """The next rows to send, in id order: settled ones, and ones in flight too long; stops at the first row
    that must wait (so no row is passed over)."""
    wait = timedelta(seconds=settings.PORTCULLIS_AUDIT_STREAM_WAIT_S)
    rows = list(Call.objects.filter(id__gt=after).order_by("id").values(*STREAMED)[:BATCH])
    due = []
    for row in rows:
        young = row["created_at"] > now - timedelta(seconds=SETTLE_S)
        waiting = row["outcome"] == Call.Outcome.PENDING and row["created_at"] > now - wait
        if young or waiting:
            break
        due.append(row)
    return due


def send_due(sender, syslog: bool, now: datetime) -> int:
    """One round: the rows due, sent and the cursor moved past them; returns how many were delivered."""
    stream = _take_lease(now)
    if stream is None:
        return 0
    rows = due_rows(stream.last_id, now)
    if not rows:
        return 0
    records = [row_record(r) for r in rows]
    payload = ([syslog_message(r) for r in records] if syslog
               else [json.dumps(r, ensure_ascii=False).encode() for r in records])
    try:
        sender.send(payload)
    except NotDelivered as exc:
        AuditStream.objects.filter(id="default", holder=PROCESS).update(last_error=str(exc)[:500],
                                                                        last_error_at=timezone.now())
        raise
    AuditStream.objects.filter(id="default", holder=PROCESS).update(last_id=rows[-1]["id"], last_sent_at=now,
                                                                    delivered=stream.delivered + len(rows))
    return len(rows)


class Streamer(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(name="portcullis-audit-stream", daemon=True)
        self.url = url
        self.stopping = threading.Event()

    def run(self) -> None:
        sender, syslog = open_destination(self.url)
        failures = 0
        log.info("streaming the audit log to %s", describe(self.url))
        while not self.stopping.is_set():
            try:
                close_old_connections()
                sent = send_due(sender, syslog, timezone.now())
                failures = 0
                if sent < BATCH:
                    self.stopping.wait(IDLE_S)
            except NotDelivered as exc:
                failures += 1
                log.warning("audit stream to %s: not delivered (%s); trying again", describe(self.url), exc)
                self.stopping.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
            except Exception:  # noqa: BLE001 - the database, most likely: try again; calls are never affected
                log.exception("audit stream round failed")
                connection.close()
                self.stopping.wait(5)
        sender.close()


_streamer: Streamer | None = None


def start() -> None:
    """Start this process's sender (it sends while it holds the lease) when a destination is configured."""
    global _streamer
    if destination() and _streamer is None:
        _streamer = Streamer(destination())
        _streamer.start()


def status() -> dict:
    """What the call log page says about keeping the log: retention, and the stream's progress and last failure."""
    url = destination()
    stream = AuditStream.objects.filter(id="default").first() if url else None
    return {"retention_days": settings.PORTCULLIS_AUDIT_RETENTION_DAYS, "stream_to": describe(url) if url else "",
            "stream": stream}
