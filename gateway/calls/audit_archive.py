"""Retention: audit rows older than PORTCULLIS_AUDIT_RETENTION_DAYS move to compressed JSON Lines files, then
leave the table. Run by every gateway process's housekeeping (and `archive_audit`); runs never overlap.

A file holds, per chain, a contiguous run of positions — the rows older than the cutoff and settled, up to the
chain's first row that is not — with a header saying where each run begins (position and digest: the anchor the
run continues from). The chain's `archived_seq/archived_digest` move to where the run ends, in the transaction that
deletes the rows, so the table's remaining rows verify from there and `verify_audit --archive` verifies the files
and the table as one chain. The file is written and synced before the rows are deleted: a run interrupted after
writing it archives the same rows again next time (verification skips a run already seen), never loses them.
"""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q

from gateway.calls import audit_chain
from gateway.calls.audit_verify import UNCHAINED
from gateway.models import AuditChain, Call

BATCH = 20_000  # rows per file and transaction
FORMAT = 1


def archive_due(now: datetime) -> int:
    """Archive what the retention setting says is due; returns the number of rows moved."""
    days = settings.PORTCULLIS_AUDIT_RETENTION_DAYS
    if not days:
        return 0
    moved = 0
    while True:
        count = archive_before(now - timedelta(days=days), Path(settings.PORTCULLIS_AUDIT_ARCHIVE_DIR), now)
        moved += count
        if count < BATCH:
            return moved


def archive_before(cutoff: datetime, directory: Path, now: datetime) -> int:
    """One file of at most BATCH rows created before `cutoff`; returns how many rows it moved."""
    with transaction.atomic():
        # Take the write lock first (SQLite) / the chains' rows (PostgreSQL): concurrent runs wait here.
        AuditChain.objects.filter(id=UNCHAINED).update(worker="rows written before the hash chain")
        list(AuditChain.objects.select_for_update().values_list("id", flat=True))
        old = Call.objects.filter(created_at__lt=cutoff)
        runs = _runs(old, cutoff)
        rows = []
        for chain, up_to in runs.items():
            rows += list(old.filter(chain=chain, seq__lte=up_to).order_by("seq").values())
            if len(rows) >= BATCH:
                break
        rows += list(old.filter(chain="").order_by("id").values()[:max(0, BATCH - len(rows))])
        if not rows:
            return 0
        chains = {c.id: c for c in AuditChain.objects.filter(id__in={r["chain"] for r in rows if r["chain"]})}
        header, ends = {}, {}
        for row in rows:
            chain = row["chain"]
            if not chain:
                continue
            if chain not in header:
                known = chains.get(chain)
                after = (known.archived_seq, known.archived_digest) if known and known.archived_seq else (
                    0, audit_chain.genesis(chain))
                header[chain] = {"after_seq": after[0], "after_digest": after[1]}
            ends[chain] = (row["seq"], row["digest"], row["worker"])
        _write(directory / f"calls-{now:%Y%m%dT%H%M%S%f}-{rows[0]['id']}.jsonl.gz",
               {"portcullis_audit_archive": FORMAT, "written_at": now, "cutoff": cutoff, "key_id": audit_chain.key_id(),
                "chains": header, "rows": len(rows)}, rows)
        for chain, (seq, digest, worker) in ends.items():
            if not AuditChain.objects.filter(id=chain).update(archived_seq=seq, archived_digest=digest):
                # A chain no heartbeat has anchored yet: its writer is the process its rows name.
                AuditChain.objects.create(id=chain, key_id=audit_chain.key_id(), head_seq=seq, head_digest=digest,
                                          head_at=now, archived_seq=seq, archived_digest=digest, worker=worker)
        ids = [r["id"] for r in rows]
        for start in range(0, len(ids), 1000):
            Call.objects.filter(id__in=ids[start:start + 1000]).delete()
    return len(rows)


def _runs(old, cutoff: datetime) -> dict[str, int]:
    """Per chain, the last position that may move: every row up to it is older than the cutoff and settled."""
    ends = dict(old.exclude(chain="").values_list("chain").annotate(Min("seq")).values_list("chain", "seq__min"))
    if not ends:
        return {}
    blockers = dict(Call.objects.filter(chain__in=list(ends)).filter(
        Q(created_at__gte=cutoff) | Q(outcome=Call.Outcome.PENDING)).values_list("chain").annotate(
        Min("seq")).values_list("chain", "seq__min"))
    runs = {}
    for chain in ends:
        last = old.filter(chain=chain).order_by("-seq").values_list("seq", flat=True).first()
        if chain in blockers:
            last = min(last, blockers[chain] - 1)
        if last >= ends[chain]:
            runs[chain] = last
    return runs


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")  # all of it: the digest covers the microseconds
    raise TypeError(f"{type(value).__name__} in an audit row")


def _write(path: Path, header: dict, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as out:
            out.write((json.dumps(header, default=_json_value) + "\n").encode())
            for row in rows:
                out.write((json.dumps(row, default=_json_value, ensure_ascii=False) + "\n").encode())
        raw.flush()
        os.fsync(raw.fileno())
    os.chmod(partial, 0o600)
    os.replace(partial, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
