"""The audit log's hash chains: what makes an altered, deleted, inserted or reordered row detectable.

Every audit row is a link of one chain. A chain belongs to one writer — a database thread of one gateway process,
or one of an event loop's own PostgreSQL connections (loop_postgres.py) — so links are made without any lock or
read shared between writers: each writer keeps its head (last sequence number and digest) in memory and advances
it only when the row's transaction committed, so a rolled-back row leaves no gap. Several processes, threads and
connections write several chains side by side; each verifies on its own.

A row carries:
- `chain`, `seq`: the chain and the row's place in it (1, 2, 3, … without gaps);
- `digest`: HMAC-SHA256 over the previous row's digest and the row's admission — what the gateway decided and why,
  fixed when the row is written (time, grant name, server slug, tool, dispatcher, redacted arguments, argument
  hash, decision, rule, counters, chain and seq);
- `outcome_digest`: HMAC-SHA256 over the row's digest and its settlement — outcome, refusal, reason, error,
  latency, result size, finished time — written by the one update that settles the row (a held call's refusal
  and reason are settled there too, which is why they are not part of the admission).

The key is PORTCULLIS_AUDIT_KEY, or one derived from SECRET_KEY with its own label: someone who can write to the
database but does not hold the key cannot write a row, or rewrite the chain after one, that verifies. Each chain's
head is recorded in `AuditChain` at every heartbeat (the anchor: rows up to it must all be there), and archiving
records where the rows still in the table begin.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings

from gateway.calls import prepared

# The columns a row's digest covers (its admission), and those its outcome digest covers (its settlement).
# Foreign keys (grant, server, policy version, approval) are not covered: deleting a grant or a server clears them
# on its rows; what the row keeps of them (grant name, server slug, the approval named in the reason) is.
ADMISSION = ("created_at", "grant_name", "server_slug", "tool_name", "via", "arguments", "argument_hash", "decision",
             "rule", "counters", "chain", "seq")
SETTLEMENT = ("outcome", "refusal", "reason", "error", "latency_ms", "result_size", "finished_at")


_KEYED: dict[tuple[str, str], tuple[bytes, object]] = {}


def _keyed() -> tuple[bytes, object]:
    """(the key, an HMAC object keyed with it to copy), computed once per key."""
    configured, secret = getattr(settings, "PORTCULLIS_AUDIT_KEY", ""), settings.SECRET_KEY
    found = _KEYED.get((configured, secret))
    if found is None:
        raw = configured.encode() if configured else hashlib.sha256(
            b"portcullis audit chain\x00" + secret.encode()).digest()
        found = _KEYED[(configured, secret)] = (raw, hmac.new(raw, digestmod=hashlib.sha256))
    return found


def key() -> bytes:
    return _keyed()[0]


def _mac(*parts: bytes) -> str:
    mac = _keyed()[1].copy()
    for part in parts:
        mac.update(part)
    return mac.hexdigest()


def key_id() -> str:
    """A fingerprint of the key (not the key): says which key a chain was written with."""
    return hashlib.sha256(b"portcullis audit key id\x00" + key()).hexdigest()[:12]


def genesis(chain: str) -> str:
    """The 'previous digest' of a chain's first row."""
    return _mac(b"genesis\x00", chain.encode())


def _value(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _canonical(values: dict, columns: tuple[str, ...]) -> bytes:
    return _dumps([_value(values.get(c)) for c in columns]).encode()


def row_digest(previous: str, values: dict) -> str:
    return _mac(previous.encode(), b"\x00", _canonical(values, ADMISSION))


def outcome_digest(digest: str, values: dict) -> str:
    return _mac(b"outcome\x00", digest.encode(), b"\x00", _canonical(values, SETTLEMENT))


@dataclass
class Head:
    """One writer's chain: the last committed row's sequence number and digest."""

    chain: str
    seq: int = 0
    digest: str = ""
    anchored_seq: int = -1
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def advance(self, seq: int, digest: str) -> None:
        with self.lock:
            if seq == self.seq + 1:
                self.seq, self.digest = seq, digest


_local = threading.local()
_heads: dict[str, Head] = {}  # every chain this process writes, for the heartbeat's anchors
_heads_lock = threading.Lock()


def _head() -> Head:
    """The writer's chain: this thread's, or that of the event loop's PostgreSQL connection the task runs on
    (gateway/calls/loop_postgres.py: tasks interleave on the loop's thread, each on its own connection)."""
    owner = prepared.loop_connection() or _local
    head = getattr(owner, "head", None)
    if head is None:
        name = uuid.uuid4().hex[:16]
        head = Head(name, 0, genesis(name))
        owner.head = head
        with _heads_lock:
            _heads[name] = head
    return head


def link(values: dict) -> tuple[Head, int, str]:
    """Give the row about to be written its place in this writer's chain: sets values' chain and seq, returns
    (head, seq, digest). Call `committed` once the row is written."""
    head = _head()
    with head.lock:
        seq, previous = head.seq + 1, head.digest
    values["chain"], values["seq"] = head.chain, seq
    return head, seq, row_digest(previous, values)


def committed(head: Head, seq: int, digest: str) -> None:
    """The row is written: its chain advances when its transaction commits (at once outside a transaction)."""
    prepared.after_commit(lambda: head.advance(seq, digest))


def heads() -> list[Head]:
    with _heads_lock:
        return list(_heads.values())


def anchor(worker: str, now: datetime) -> None:
    """Record where each of this process's chains has got to (called from the heartbeat): rows up to an anchor
    must all be in the table or the archive, so rows deleted from a chain's end are found too."""
    from gateway.models import AuditChain

    for head in heads():
        with head.lock:
            seq, digest = head.seq, head.digest
        if seq == 0 or seq == head.anchored_seq:
            continue
        updated = AuditChain.objects.filter(id=head.chain, head_seq__lt=seq).update(
            head_seq=seq, head_digest=digest, head_at=now, worker=worker, key_id=key_id())
        if not updated and not AuditChain.objects.filter(id=head.chain).exists():
            AuditChain.objects.create(id=head.chain, worker=worker, key_id=key_id(), started_at=now, head_seq=seq,
                                      head_digest=digest, head_at=now)
        head.anchored_seq = seq
