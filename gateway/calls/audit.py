"""The audit log: one Call row per tools/call, committed before the upstream sees the request.

Rows carry redacted arguments only, and at most PORTCULLIS_AUDIT_ARGUMENT_BYTES of them (`stored_arguments`);
NUL characters, which PostgreSQL cannot store in text or jsonb, are kept as the visible escape `\u0000`. A row left
`pending` by a process that died is marked `interrupted: outcome unknown` when a gateway process starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from gateway.calls import audit_chain, prepared
from gateway.models import Call, Tool
from gateway.redaction import configured_paths, redact, redact_text, schema_secret_paths
from gateway.telemetry import metrics, tracing

# Identifies this process on the rows it leaves pending: host, pid, and a boot id so a reused pid differs.
WORKER_ID = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
# A pending row older than this belongs to a call that cannot still be running anywhere.
STALE_AFTER = timedelta(hours=2)


class AuditUnavailable(RuntimeError):
    """The audit row could not be written: the call must not be forwarded."""


def argument_hash(arguments: object) -> str:
    """sha256 of the canonical JSON of the arguments (before redaction): binds approvals to exact calls."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


NUL = "\x00"
NUL_SHOWN = "\\u0000"  # the six characters \u0000: what a row keeps of a NUL character
TRUNCATED = "_truncated"  # the key of what a row keeps of arguments too large to store whole


def stored_text(text: str) -> str:
    return text.replace(NUL, NUL_SHOWN) if NUL in text else text


def _without_nul(value: object) -> object:
    if isinstance(value, str):
        return stored_text(value)
    if isinstance(value, dict):
        return {stored_text(str(k)): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


# (tool id, definition hash) -> the paths its schema marks secret. Definitions are immutable per hash.
_SCHEMA_PATHS: dict[tuple, frozenset] = {}


def secret_paths(tool_id: int | None, definition_hash: str | None, tool_name: str) -> frozenset[tuple[str, ...]]:
    """The fields of this tool's arguments that are secret besides their key names: marked in its input schema
    (read once per definition) or listed for it in PORTCULLIS_REDACT_FIELDS."""
    paths = configured_paths(tool_name)
    if tool_id is None:
        return paths
    key = (tool_id, definition_hash)
    if key not in _SCHEMA_PATHS:
        prepared.needs_thread()
        if len(_SCHEMA_PATHS) >= 4096:
            _SCHEMA_PATHS.clear()
        schema = Tool.objects.filter(pk=tool_id).values_list("input_schema", flat=True).first()
        _SCHEMA_PATHS[key] = schema_secret_paths(schema)
    return paths | _SCHEMA_PATHS[key]


def stored_arguments(arguments: object, digest: str, paths: frozenset = frozenset()) -> dict:
    """What a row (an audit row, an approval) keeps of a call's arguments: redacted, NUL characters escaped, and
    when their JSON is longer than PORTCULLIS_AUDIT_ARGUMENT_BYTES, {"_truncated": {"bytes": <the JSON's size>,
    "sha256": <the argument hash>, "prefix": <its first bytes>}}. The argument hash (of exactly what the agent
    sent) binds approvals and identifies the call either way."""
    kept = _without_nul(redact(arguments if isinstance(arguments, dict) else {}, paths))
    text = json.dumps(kept, ensure_ascii=False)
    limit = settings.PORTCULLIS_AUDIT_ARGUMENT_BYTES
    size = len(text.encode())
    if size <= limit:
        return kept
    prefix = text.encode()[:limit].decode(errors="ignore")
    return {TRUNCATED: {"bytes": size, "sha256": digest, "prefix": prefix}}


# The hot path writes audit rows with a fixed statement and converts only the values that need it (JSON,
# datetimes): building a model instance and running every field's conversion cost more than the INSERT.
_COLUMNS = ("created_at", "grant_id", "grant_name", "server_id", "server_slug", "tool_name", "via", "arguments",
            "argument_hash", "decision", "refusal", "reason", "rule", "policy_version_id", "counters", "outcome",
            "error", "latency_ms", "result_size", "approval_id", "worker", "finished_at", "chain", "seq", "digest",
            "outcome_digest")
_DEFAULTS = {"grant_name": "", "via": "", "argument_hash": "", "refusal": "", "reason": "", "rule": "", "error": "",
             "outcome": Call.Outcome.PENDING, "outcome_digest": ""}
_INSERT_SQL = (f"INSERT INTO {Call._meta.db_table} ({', '.join(_COLUMNS)}) "
               f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}) RETURNING id")
_CLOSE_SQL = (f"UPDATE {Call._meta.db_table} SET outcome = %s, latency_ms = %s, result_size = %s, error = %s, "
              "finished_at = %s, outcome_digest = %s WHERE id = %s")
_FOREIGN = {"grant": "grant_id", "server": "server_id", "approval": "approval_id"}


def open_row(**fields) -> int:
    """Insert the row and return its id; raises AuditUnavailable on any database failure."""
    values, linked = _values(fields)
    try:
        with tracing.span("portcullis.audit_write"):
            call_id = prepared.fetchone(_INSERT_SQL, values)[0]
    except prepared.NeedsThread:
        raise
    except Exception as exc:  # the database is the audit log: without it nothing is forwarded
        metrics.AUDIT_FAILURES.inc()
        raise AuditUnavailable(f"audit log unavailable: {type(exc).__name__}") from exc
    _linked(call_id, linked)
    return call_id


def open_row_reserving(reserve_sql: str, reserve_params: list, **fields) -> int | None:
    """PostgreSQL: reserve one counter and insert the row in one statement (one round trip, committed on its
    own): `reserve_sql` is an upsert that returns a row only when it counted. Returns the row id, or None
    when the counter is full (then nothing was written or counted). The counter's row lock is held only
    inside the database, never across a round trip to this process."""
    return open_row_checked(f"taken AS ({reserve_sql})", reserve_params, "taken", answers=(), counted=True,
                            **fields)[0]


def open_row_checked(ctes: str, cte_params: list, source: str, *, answers: tuple[str, ...], counted: bool,
                     **fields) -> tuple:
    """PostgreSQL: `WITH <ctes>, written AS (INSERT … SELECT <the row> FROM <source> RETURNING id) SELECT <the row
    id>, <answers>` in one statement, committed on its own: the row is written only if `source` yields a row;
    `counted`: the statement also takes the call's counters. `answers` are SQL expressions over the WITH clauses
    (calls/repeat_calls.py: whether the facts were those the call was decided on; which counter was full).
    Returns (the row id or None, *the answers)."""
    values, linked = _values(fields)
    traced = {"portcullis.counter": "reserved in the same statement"} if counted else {}
    try:
        with tracing.span("portcullis.audit_write", **traced):
            row = prepared.fetchone(f"WITH {ctes}, written AS ({_insert_from_sql()} FROM {source} RETURNING id) "
                                    f"SELECT {', '.join(('(SELECT id FROM written)', *answers))}",
                                    [*cte_params, *values], wrote=_written)
    except prepared.NeedsThread:
        raise
    except Exception as exc:
        metrics.AUDIT_FAILURES.inc()
        raise AuditUnavailable(f"audit log unavailable: {type(exc).__name__}") from exc
    if row[0] is not None:
        _linked(row[0], linked)
    return row


def _written(row: tuple | None) -> bool:
    return row is not None and row[0] is not None  # open_row_checked()'s statement: its row id


# Rows this process opened and has not settled yet: what sealing their settlement needs (the row's digest, and the
# refusal and reason its settlement may change) and what counting it needs (server, tool label, decision), so the
# hot path's settlement reads nothing back.
_OPEN: dict[int, tuple[str, str, str, tuple[str, str, str]]] = {}
_OPEN_MAX = 100_000


def _linked(call_id: int, linked: tuple) -> None:
    head, seq, digest, refusal, reason, settled, labels = linked
    audit_chain.committed(head, seq, digest)
    if settled:
        metrics.call_recorded(*labels, settled, refusal)
        return
    if len(_OPEN) >= _OPEN_MAX:  # only rows of rolled-back transactions are never popped; read back then
        _OPEN.clear()
    _OPEN[call_id] = (digest, refusal, reason, labels)


def _labels(row: dict) -> tuple[str, str, str]:
    return row["server_slug"], metrics.tool_label(row["tool_name"], row["refusal"]), row["decision"]


def _sealing(call_id: int) -> tuple[str, str, str, tuple[str, str, str]]:
    """(digest, refusal, reason, metric labels) of a row about to be settled."""
    known = _OPEN.pop(call_id, None)
    if known is not None:
        return known
    prepared.needs_thread()
    row = Call.objects.filter(pk=call_id).values("digest", "refusal", "reason", "server_slug", "tool_name",
                                                   "decision").first()
    if row is None:
        return "", "", "", ("", "", "")
    return row["digest"], row["refusal"], row["reason"], _labels(row)


_INSERT_FROM_SQL: str | None = None


def _insert_from_sql() -> str:
    """INSERT … SELECT <typed parameters>: in a SELECT list a parameter needs its column's type spelled out."""
    global _INSERT_FROM_SQL
    if _INSERT_FROM_SQL is None:
        casts = ", ".join(f"%s::{Call._meta.get_field(c).db_type(connection)}" for c in _COLUMNS)
        _INSERT_FROM_SQL = f"INSERT INTO {Call._meta.db_table} ({', '.join(_COLUMNS)}) SELECT {casts}"
    return _INSERT_FROM_SQL


def _values(fields: dict) -> tuple[list, tuple]:
    paths = fields.pop("secret_paths", frozenset())
    for name, column in _FOREIGN.items():
        if name in fields:
            related = fields.pop(name)
            fields[column] = related.pk if related is not None else None
    unknown = set(fields) - set(_COLUMNS)
    if unknown:
        raise TypeError(f"unknown audit fields {sorted(unknown)}")
    row = {**_DEFAULTS, **fields, "worker": WORKER_ID}
    adapt_json, adapt_time, db = _ARGUMENTS.get_db_prep_save, prepared.adapt_time, prepared.database()
    row["arguments"] = stored_arguments(row.get("arguments") or {}, row["argument_hash"], paths)
    row["counters"] = _without_nul(row.get("counters") or [])
    row["reason"] = redact_text(row["reason"])
    for column in ("grant_name", "tool_name", "via", "reason", "rule", "refusal", "error"):
        if isinstance(row.get(column), str):
            row[column] = stored_text(row[column])
    head, seq, digest = audit_chain.link(row)
    row["digest"] = digest
    settled = row["outcome"] if row["outcome"] != Call.Outcome.PENDING else ""
    if settled:
        row["outcome_digest"] = audit_chain.outcome_digest(digest, row)
    linked = (head, seq, digest, row["refusal"], row["reason"], settled, _labels(row))
    row["arguments"] = adapt_json(row["arguments"], db)
    row["counters"] = adapt_json(row["counters"], db)
    row["created_at"] = adapt_time(row["created_at"])
    row["finished_at"] = adapt_time(row.get("finished_at"))
    return [row.get(column) for column in _COLUMNS], linked


_ARGUMENTS = Call._meta.get_field("arguments")


# The outcome is committed without waiting for PostgreSQL's WAL flush (SQLite's synchronous=NORMAL makes the
# same trade): the row that must survive, written before the upstream saw the call, was committed durably; if
# the database crashes before this flush, the row stays pending and is marked `interrupted` at the next start.
# One statement (so it can be prepared): set_config(…, true) is SET LOCAL, for exactly this statement's implicit
# transaction (or the caller's).
_CLOSE_SQL_POSTGRESQL = _CLOSE_SQL.replace(
    " WHERE id = %s", " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS outcome_commit "
                      f"WHERE {Call._meta.db_table}.id = %s")


def _stored_error(error: str) -> str:
    """What a row keeps of an error: redacted, at most 4000 characters, NUL escaped."""
    return stored_text(redact_text(error)[:4000])


def close_row(call_id: int, *, outcome: str, latency_ms: float, result_size: int | None = None,
              error: str = "", now: datetime) -> None:
    sql = _CLOSE_SQL_POSTGRESQL if prepared.vendor() == "postgresql" else _CLOSE_SQL
    error = _stored_error(error)
    digest, refusal, reason, labels = _sealing(call_id)
    seal = audit_chain.outcome_digest(digest, {"outcome": outcome, "refusal": refusal, "reason": reason,
                                               "error": error, "latency_ms": latency_ms, "result_size": result_size,
                                               "finished_at": now})
    prepared.fetchone(sql, [outcome, latency_ms, result_size, error, prepared.adapt_time(now),
                            seal, call_id])
    prepared.after_commit(lambda: metrics.call_recorded(*labels, outcome))


def note_reason(call_id: int, reason: str) -> None:
    """A pending row's reason, rewritten before it settles (a held call released: who approved it). The outcome
    digest, written at settlement, covers it."""
    reason = stored_text(redact_text(reason))
    Call.objects.filter(pk=call_id, outcome=Call.Outcome.PENDING).update(reason=reason)
    known = _OPEN.get(call_id)
    if known is not None:
        _OPEN[call_id] = (known[0], known[1], reason, known[3])


def settle_rows(rows, *, now: datetime, outcome: str, error: str | None = None, refusal: str | None = None,
                reason: str | None = None) -> int:
    """Settle the pending rows of a queryset (a held call refused, calls of a process that ended), each with its
    outcome digest. Off the hot path: one read, then one update per row. Returns the number settled."""
    count = 0
    with transaction.atomic():
        for row in rows.filter(outcome=Call.Outcome.PENDING).select_for_update().values(
                "id", "digest", "refusal", "reason", "error", "latency_ms", "result_size", "server_slug",
                "tool_name", "decision"):
            _OPEN.pop(row["id"], None)
            fields = {"outcome": outcome, "finished_at": now}
            if error is not None:
                fields["error"] = _stored_error(error)
            if refusal is not None:
                fields["refusal"] = stored_text(refusal)
            if reason is not None:
                fields["reason"] = stored_text(redact_text(reason))
            sealed = {**row, **fields}
            fields["outcome_digest"] = audit_chain.outcome_digest(row["digest"], sealed)
            if Call.objects.filter(pk=row["id"], outcome=Call.Outcome.PENDING).update(**fields):
                count += 1
                labels = _labels({**row, "refusal": sealed["refusal"]})
                transaction.on_commit(lambda labels=labels, refusal=sealed["refusal"]:
                                      metrics.call_recorded(*labels, outcome, refusal))
    return count


def _alive_here(worker: str) -> bool:
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname()[:60] or not pid.isdigit():
        return True  # another host's process: only the staleness rule applies
    if worker == WORKER_ID:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # The pid exists, but may have been reused by another program; a different boot id means a new process.
    return False if int(pid) == os.getpid() else True


def mark_interrupted(now: datetime) -> int:
    """Rows pending from dead processes (this host) or too old to be running → interrupted. Returns the count."""
    pending = Call.objects.filter(outcome=Call.Outcome.PENDING).exclude(worker=WORKER_ID)
    dead = [w for w in pending.values_list("worker", flat=True).distinct() if not _alive_here(w)]
    return settle_rows(pending.filter(Q(worker__in=dead) | Q(created_at__lt=now - STALE_AFTER)), now=now,
                       outcome=Call.Outcome.INTERRUPTED,
                       error="interrupted: outcome unknown (the gateway process ended)")
