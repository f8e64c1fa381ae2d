"""Checking the audit log's hash chains (gateway/calls/audit_chain.py): the table, and the archives it was
trimmed into. Reports, per chain, the first row that was altered, deleted, inserted or put out of order."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.calls import audit_chain
from gateway.models import AuditChain, Call

ROW_COLUMNS = ("id", *audit_chain.ADMISSION, *audit_chain.SETTLEMENT, "digest", "outcome_digest")
UNCHAINED = "unchained"  # the AuditChain row naming the last row written before the chain existed


@dataclass
class Report:
    rows: int = 0
    chains: int = 0
    unchained: int = 0
    archived: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass
class Start:
    """Where a chain's rows under check begin: after this position, whose digest is this."""

    seq: int
    digest: str


def _expected_start(chain: str, known: AuditChain | None) -> Start:
    if known is not None and known.archived_seq:
        return Start(known.archived_seq, known.archived_digest)
    return Start(0, audit_chain.genesis(chain))


def check_chain(chain: str, rows: list[dict], start: Start, where: str = "") -> tuple[str | None, Start]:
    """The first problem in one chain's rows (ordered by seq, then id), and where the chain ends."""
    previous, seq, last_id = start.digest, start.seq, None
    for row in rows:
        name = f"call #{row['id']}{where}"
        if not row.get("digest") or row.get("seq") is None:
            return f"{name} has no place in chain {chain}: it was inserted", Start(seq, previous)
        if row["seq"] <= seq:
            return (f"{name} repeats position {row['seq']} of chain {chain}: a row was inserted or copied",
                    Start(seq, previous))
        if row["seq"] > seq + 1:
            after = f"after call #{last_id}" if last_id is not None else "at the start"
            missing = (f"position {seq + 1}" if row["seq"] == seq + 2
                       else f"positions {seq + 1}-{row['seq'] - 1}")
            return (f"{missing} of chain {chain} missing {after}, before {name}: rows were deleted",
                    Start(seq, previous))
        if audit_chain.row_digest(previous, row) != row["digest"]:
            return _mismatch(chain, rows, start, row, name), Start(seq, previous)
        if row["outcome"] != Call.Outcome.PENDING or row.get("outcome_digest"):
            if audit_chain.outcome_digest(row["digest"], row) != row.get("outcome_digest"):
                return (f"{name}'s outcome was altered: outcome, refusal, reason, error, latency, size or finished "
                        "time no longer match its outcome digest", Start(seq, previous))
        previous, seq, last_id = row["digest"], row["seq"], row["id"]
    return None, Start(seq, previous)


NEAR = 64  # how far from where it is a moved row is looked for (each try is one HMAC)


def _mismatch(chain: str, rows: list[dict], start: Start, row: dict, name: str) -> str:
    """A row whose digest does not follow: written at another position (after another row), or altered."""
    here = rows.index(row)
    predecessors = [start.digest] + [r["digest"] for r in rows[max(0, here - NEAR):here + NEAR] if r.get("digest")]
    for seq in range(max(1, row["seq"] - NEAR), row["seq"] + NEAR + 1):
        if seq == row["seq"]:
            continue
        moved = {**row, "seq": seq}
        if any(audit_chain.row_digest(digest, moved) == row["digest"] for digest in predecessors):
            return (f"{name} is at position {row['seq']} of chain {chain} but was written at position {seq}: "
                    "rows were reordered")
    return (f"{name} was altered: its time, grant, server, tool, arguments, decision, rule or counters no longer "
            f"match its digest (chain {chain}, position {row['seq']})")


def _table_rows() -> Iterator[dict]:
    query = Call.objects.order_by("chain", "seq", "id").values(*ROW_COLUMNS)
    yield from query.iterator(chunk_size=2000)


CHUNK = 5000  # rows of one chain checked at a time: memory stays flat however long a chain is


def _grouped(rows: Iterable[dict]) -> Iterator[tuple[str, list[dict]]]:
    """(chain, rows) in order, a chain's rows in chunks of at most CHUNK (consecutive chunks continue it)."""
    chain, group = None, []
    for row in rows:
        if (row["chain"] != chain or len(group) >= CHUNK) and group:
            yield chain, group
            group = []
        chain = row["chain"]
        group.append(row)
    if group:
        yield chain, group


def verify_table(report: Report | None = None, archive_ends: dict[str, Start] | None = None) -> Report:
    """Check every chain in the table against its anchors (and the archives' ends, when they were read)."""
    report = report or Report()
    known = {c.id: c for c in AuditChain.objects.all()}
    unchained_up_to = known[UNCHAINED].head_seq if UNCHAINED in known else 0
    key_id = audit_chain.key_id()
    seen: set[str] = set()
    current, start, broken, at_head = None, Start(0, ""), False, None
    for chain, rows in _grouped(_table_rows()):
        report.rows += len(rows)
        if chain == "":
            for row in rows:
                if row["id"] <= unchained_up_to:
                    report.unchained += 1
                else:
                    report.problems.append(f"call #{row['id']} has no place in any chain: it was inserted")
                    break
            continue
        chain_row = known.get(chain)
        if chain != current:  # a new chain begins: close the one before
            _close(report, known.get(current), current, broken, start, at_head)
            current, broken, at_head = chain, False, None
            seen.add(chain)
            report.chains += 1
            if chain_row is not None and chain_row.key_id and chain_row.key_id != key_id:
                report.problems.append(f"chain {chain} was written with another audit key ({chain_row.key_id}); "
                                       "verify it with that key (PORTCULLIS_AUDIT_KEY)")
                broken = True
                continue
            start = _expected_start(chain, chain_row)
            archived_to = archive_ends.get(chain, Start(0, "")).seq if archive_ends is not None else start.seq
            if archived_to != start.seq:
                report.problems.append(f"chain {chain}: the archives end at position {archived_to} but "
                                       f"the table continues after position {start.seq}")
                broken = True
                continue
        if broken:
            continue
        problem, start = check_chain(chain, rows, start)
        if problem:
            report.problems.append(problem)
            broken = True
            continue
        if chain_row is not None and chain_row.head_seq:
            at_head = next((r for r in rows if r["seq"] == chain_row.head_seq), at_head)
    _close(report, known.get(current), current, broken, start, at_head)
    for chain, chain_row in known.items():
        if chain == UNCHAINED or chain in seen:
            continue
        if chain_row.head_seq > chain_row.archived_seq:
            report.problems.append(
                f"chain {chain} ({chain_row.worker}) reached position {chain_row.head_seq} but none of its rows "
                f"after position {chain_row.archived_seq} are in the table: rows were deleted")
    return report


def _close(report: Report, chain: AuditChain | None, name: str | None, broken: bool, end: Start,
           at_head: dict | None) -> None:
    """A chain's rows all checked: they must reach the position its writer last reported, with that digest."""
    if name is None or broken or chain is None:
        return
    if chain.head_seq > end.seq:
        report.problems.append(
            f"chain {chain.id} ends at position {end.seq} but its writer reported position {chain.head_seq} at "
            f"{chain.head_at:%Y-%m-%d %H:%M:%S} UTC: rows were deleted from its end")
    elif at_head is not None and chain.head_seq > chain.archived_seq and at_head["digest"] != chain.head_digest:
        report.problems.append(f"call #{at_head['id']} is not the row its writer reported at position "
                               f"{chain.head_seq} of chain {chain.id}: the chain was rewritten")


def read_archive(path: Path) -> tuple[dict, list[dict]]:
    """(the header, the rows) of one archive file."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        header = json.loads(next(lines))
        rows = [json.loads(line) for line in lines if line.strip()]
    return header, rows


def verify_archives(directory: Path, report: Report) -> dict[str, Start]:
    """Check the archive files in the order they were written, each continuing the one before; returns where each
    chain's archived rows end (where the table must go on)."""
    ends: dict[str, Start] = {}
    for path in sorted(directory.glob("calls-*.jsonl.gz")):
        try:
            header, rows = read_archive(path)
        except (OSError, ValueError, StopIteration) as exc:
            report.problems.append(f"{path.name} cannot be read: {exc}")
            continue
        for chain, begin in header.get("chains", {}).items():
            start = Start(begin["after_seq"], begin["after_digest"])
            chain_rows = [r for r in rows if r.get("chain") == chain]
            if chain in ends and ends[chain].seq >= start.seq + len(chain_rows):
                continue  # archived again after an interrupted run: already checked
            if chain in ends and ends[chain].seq != start.seq:
                report.problems.append(f"{path.name}: chain {chain} continues after position {start.seq} but the "
                                       f"archives before it end at {ends[chain].seq}: an archive is missing")
                continue
            if chain not in ends and start.seq != 0:
                report.problems.append(f"{path.name}: chain {chain} begins after position {start.seq}: an earlier "
                                       "archive is missing")
                continue
            for row in chain_rows:
                row["created_at"] = _time(row["created_at"])
                row["finished_at"] = _time(row.get("finished_at"))
            problem, end = check_chain(chain, chain_rows, start, where=f" in {path.name}")
            report.archived += len(chain_rows)
            if problem:
                report.problems.append(problem)
            ends[chain] = end
    return ends


def _time(value: str | None):
    from django.utils.dateparse import parse_datetime
    return parse_datetime(value) if value else None
