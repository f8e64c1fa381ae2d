"""Rate-limit counters, reserved atomically across processes in the database.

Every counter of one call is reserved in one transaction, in sorted key order (so two calls never wait on
each other's rows in opposite orders), each with a conditional upsert that only counts while n < max. If
any counter is full, the transaction rolls back and nothing is consumed. On PostgreSQL the hot path takes them in
the statement that writes the audit row: one counter with the upsert itself, several with the function of
migration 0015 (TAKE_ALL_SQL), which does the same in a subtransaction. When the upstream call fails, the
gateway gives the reservation back (release). Why a table and not Redis: see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

from django.db import connection, transaction

from gateway.calls import prepared
from gateway.models import Counter

# The same statement works on SQLite (>= 3.35) and PostgreSQL: insert the first use of a window, or add one
# only while the count is below the limit. RETURNING yields no row when the WHERE refuses.
_TAKE_ONE = (f"ON CONFLICT (key) DO UPDATE SET n = {Counter._meta.db_table}.n + 1 "
             f"WHERE {Counter._meta.db_table}.n < %s RETURNING n")
RESERVE_SQL = f"INSERT INTO {Counter._meta.db_table} (key, n, window_end) VALUES (%s, 1, %s) {_TAKE_ONE}"


@functools.cache
def reserve_from_sql(source: str) -> str:
    """RESERVE_SQL counting only where `source` (a FROM clause, which may have parameters of its own) yields a
    row: parameters key, window end, `source`'s, max. PostgreSQL (a parameter in a SELECT list is typed)."""
    key, window_end = (Counter._meta.get_field(f).db_type(connection) for f in ("key", "window_end"))
    return (f"INSERT INTO {Counter._meta.db_table} (key, n, window_end) SELECT %s::{key}, 1, %s::{window_end} "
            f"FROM {source} {_TAKE_ONE}")
# PostgreSQL: several counters taken all or none by one call of the function of migration 0015, in key order
# (together()). `full_at` is 0 when every one was taken, else the 1-based place of the first full one.
TAKE_ALL_SQL = "SELECT portcullis_take_counters(%s::text[], %s::bigint[], %s::integer[]) AS full_at"


@functools.cache
def taking_all(source: str = "") -> tuple[str, str, str]:
    """For a statement that takes several counters (parameters: together()'s) and writes a row only if it took
    them all: its WITH clause `taken` (taking them only where `source`, a FROM clause without parameters, yields a
    row), the source of the row, and the expression that says which counter was full."""
    where = f" FROM {source}" if source else ""
    return f"taken AS ({TAKE_ALL_SQL}{where})", "taken WHERE full_at = 0", "(SELECT full_at FROM taken)"


def together(reservations: Sequence[Reservable]) -> tuple[list[Reservable], list]:
    """The reservations in the order TAKE_ALL_SQL takes them (by key), and its parameters."""
    ordered = sorted(reservations, key=lambda r: r.key)
    return ordered, [[r.key for r in ordered], [r.window_end for r in ordered], [r.max for r in ordered]]


_RELEASE_SQL = f"UPDATE {Counter._meta.db_table} SET n = n - 1 WHERE key = %s AND n > 0"


class Reservable(Protocol):
    key: str
    max: int
    window_end: int


class Full(Exception):
    """A counter of the call is at its limit (raised by take(); the caller's transaction must roll back)."""

    def __init__(self, reservation: Reservable) -> None:
        super().__init__(reservation.key)
        self.reservation = reservation


def reserve(reservations: Sequence[Reservable]) -> Reservable | None:
    """Reserve one unit of every counter, all or nothing. Returns None on success, else the full counter."""
    if not reservations:
        return None
    try:
        with transaction.atomic():
            take(reservations)
    except Full as full:
        return full.reservation
    return None


def take(reservations: Sequence[Reservable]) -> None:
    """reserve() inside the caller's own transaction (counters and audit row in one commit, no savepoint):
    raises Full, and the caller's transaction rolling back gives back what was taken before it."""
    if not reservations:
        return
    if not prepared.in_transaction():
        raise RuntimeError("ratelimit.take() must run inside a transaction")
    for res in sorted(reservations, key=lambda r: r.key):
        if prepared.fetchone(RESERVE_SQL, [res.key, res.window_end, res.max]) is None:
            raise Full(res)


def release(reservations: Sequence[Reservable]) -> None:
    """Give back what reserve() took (the upstream call failed). Never goes below zero."""
    if not reservations:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        for res in sorted(reservations, key=lambda r: r.key):
            cursor.execute(_RELEASE_SQL, [res.key])


def current(keys: Sequence[str]) -> dict[str, int]:
    """The counts the policy engine reads before deciding (a hint; reserve() is the authority)."""
    if not keys:
        return {}
    return dict(Counter.objects.filter(key__in=list(keys)).values_list("key", "n"))


def sweep(now: int) -> int:
    """Delete windows that have ended; returns how many rows went."""
    deleted, _ = Counter.objects.filter(window_end__lte=now).delete()
    return deleted
