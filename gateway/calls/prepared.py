"""The hot path's fixed statements, run on the database thread's own driver connection.

A tools/call runs a handful of fixed statements (the admission read, the counter, the audit insert, the
settlement). Through Django's cursor each one also pays for the connection proxy, the cursor wrapper, the
execute wrappers and, on SQLite, a regular expression that rewrites the placeholders: more CPU than the
statement itself (`python -m bench --profile`). Here they go straight to the DB-API connection Django opened
for this thread, inside `wrap_database_errors` (so a failure is a Django DatabaseError and marks the connection
for the health check in dbthreads.py, as before):

- SQLite: the `%s` placeholders are turned into `?` once per statement text.
- PostgreSQL: Django binds parameters on the client and prepares nothing (for transaction-mode poolers), so the
  server would parse and plan every statement again; for the call's one read query planning cost six times its
  execution (pg_stat_statements). These go through a server-binding psycopg cursor and are prepared on first use;
  psycopg keeps them per connection. Behind PgBouncer in transaction mode that needs PgBouncer ≥ 1.21 with
  `max_prepared_statements` set (docs/ARCHITECTURE.md).

`transaction()` is the hot path's transaction (counters and audit row in one commit; a batch of settlements in
one commit): BEGIN and COMMIT on the driver connection, without Django's atomic() bookkeeping. Statements inside
it must come from this module; inside a Django atomic() block it is that block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections
from django.db import transaction as django_transaction

_QMARK: dict[str, str] = {}
_OPEN = "portcullis_transaction"  # attribute on Django's connection wrapper: the callbacks of the open transaction


def _qmark(sql: str) -> str:
    converted = _QMARK.get(sql)
    if converted is None:
        if "%" in sql.replace("%s", ""):
            raise ValueError("a hot-path statement has a literal %; write it as a parameter")
        converted = _QMARK[sql] = sql.replace("%s", "?")
    return converted


def _connection():
    db = connections[DEFAULT_DB_ALIAS]
    if db.connection is None:
        db.ensure_connection()
    return db


def fetchone(sql: str, params: list) -> tuple | None:
    """Run one statement and return its first row (None when it returns none)."""
    db = _connection()
    with db.wrap_database_errors:
        if db.vendor == "postgresql":
            import psycopg

            with psycopg.Cursor(db.connection) as cursor:
                cursor.execute(sql, params, prepare=True)
                return cursor.fetchone() if cursor.description else None
        cursor = db.connection.execute(_qmark(sql), params)
        try:
            return cursor.fetchone() if cursor.description else None
        finally:
            cursor.close()


def in_transaction() -> bool:
    db = connections[DEFAULT_DB_ALIAS]
    return db.in_atomic_block or getattr(db, _OPEN, None) is not None


def after_commit(callback: Callable[[], None]) -> None:
    """Run `callback` once the current transaction commits (at once outside one)."""
    db = connections[DEFAULT_DB_ALIAS]
    callbacks = getattr(db, _OPEN, None)
    if callbacks is not None:
        callbacks.append(callback)
    elif db.in_atomic_block:
        django_transaction.on_commit(callback)
    else:
        callback()


@contextmanager
def transaction() -> Iterator[None]:
    """One transaction on the driver connection: committed when the block ends, rolled back when it raises."""
    db = _connection()
    if db.in_atomic_block or getattr(db, _OPEN, None) is not None or not db.get_autocommit():
        with django_transaction.atomic():
            yield
        return
    raw = db.connection
    callbacks: list[Callable[[], None]] = []
    with db.wrap_database_errors:
        raw.execute("BEGIN IMMEDIATE" if db.vendor == "sqlite" else "BEGIN")
    setattr(db, _OPEN, callbacks)
    try:
        yield
        setattr(db, _OPEN, None)
        _end(db, "COMMIT")
    except BaseException:
        setattr(db, _OPEN, None)
        _end(db, "ROLLBACK")  # the block failed, or its commit did
        raise
    for callback in callbacks:
        callback()


def _end(db, statement: str) -> None:
    raw = db.connection
    with db.wrap_database_errors:
        if db.vendor == "sqlite":  # the sqlite3 module keeps its own view of the transaction
            raw.commit() if statement == "COMMIT" else raw.rollback()
        else:
            raw.execute(statement)
