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
  execution (pg_stat_statements). These are prepared on first use and kept per connection, and run without a
  psycopg cursor (postgres_statements.py). Behind PgBouncer in transaction mode that needs PgBouncer ≥ 1.21 with
  `max_prepared_statements` set (docs/ARCHITECTURE.md).

`transaction()` is the hot path's transaction (counters and audit row in one commit; a batch of settlements in
one commit): BEGIN and COMMIT on the driver connection, without Django's atomic() bookkeeping. Statements inside
it must come from this module; inside a Django atomic() block it is that block.

The hot path's tasks run on the event loop's own connections (gateway/calls/loop_database.py for an SQLite file,
loop_postgres.py for PostgreSQL): `use()` makes one the task's connection (a context variable, so tasks
interleaved on one loop each have their own). There a statement that would wait for SQLite's write lock, or that
found its PostgreSQL connection lost, raises NeedsThread, and so does `needs_thread()`, which every step that needs
the ORM calls first: the task then runs again on a database thread. `LoopTask.wrote` tells whether it had
committed anything first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import transaction as django_transaction

from gateway.calls import postgres_statements

_QMARK: dict[str, str] = {}
_OPEN = "portcullis_transaction"  # attribute on Django's connection wrapper: the callbacks of the open transaction
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class NeedsThread(Exception):  # noqa: N818 - an instruction to the caller, not an error
    """Raised on the event loop's connection before the task could finish there without waiting: the write lock
    is another connection's, or the next step needs the ORM. The task runs again on a database thread."""


class LoopTask:
    """A task running on one of the event loop's own connections."""

    __slots__ = ("db", "postgres", "wrote")

    def __init__(self, db, postgres=None) -> None:
        self.db = db  # the connection's Django wrapper
        self.postgres = postgres  # loop_postgres' connection (which owns an audit chain), on PostgreSQL
        self.wrote = False  # it committed a write (a statement on its own, or a transaction)


_LOOP: ContextVar[LoopTask | None] = ContextVar("portcullis_loop_task", default=None)


@contextmanager
def use(task: LoopTask) -> Iterator[LoopTask]:
    """Within the block, the hot-path statements of this context run on the task's connection (one of the event
    loop's own)."""
    token = _LOOP.set(task)
    try:
        yield task
    finally:
        _LOOP.reset(token)


def on_loop() -> bool:
    return _LOOP.get() is not None


def loop_connection():
    """The loop connection the current task runs on (it owns an audit chain: audit_chain.py), or None."""
    task = _LOOP.get()
    return task.postgres if task is not None else None


def needs_thread() -> None:
    """Called first by every step of the hot path that needs the ORM (a cache to fill, a rare branch): on the
    event loop's connection it sends the task to a database thread; elsewhere it does nothing."""
    if on_loop():
        raise NeedsThread()


def database():
    """The Django connection wrapper this thread's hot-path statements use (not connected yet, perhaps)."""
    task = _LOOP.get()
    return task.db if task is not None else connections[DEFAULT_DB_ALIAS]


def vendor() -> str:
    return database().vendor


def adapt_time(value: datetime | None):
    """A datetime as the database takes it, as Django adapts it. On SQLite with the connection in UTC (the
    settings' TIME_ZONE) a UTC datetime, what timezone.now() gives, is written directly: the text Django writes."""
    db = database()
    if value is not None and value.tzinfo is UTC and db.vendor == "sqlite" and _utc_connection(db):
        return str(value.replace(tzinfo=None))
    return db.ops.adapt_datetimefield_value(value)


def _utc_connection(db) -> bool:
    utc = getattr(db, "portcullis_utc", None)
    if utc is None:
        utc = db.portcullis_utc = bool(settings.USE_TZ) and db.timezone.utcoffset(None) == timedelta(0)
    return utc


def _qmark(sql: str) -> str:
    converted = _QMARK.get(sql)
    if converted is None:
        if "%" in sql.replace("%s", ""):
            raise ValueError("a hot-path statement has a literal %; write it as a parameter")
        converted = _QMARK[sql] = sql.replace("%s", "?")
    return converted


def _connection():
    db = database()
    if db.connection is None:
        db.ensure_connection()
    return db


def _sqlite_execute(raw, sql: str, params=()) -> sqlite3.Cursor:
    """On the loop's connection a statement that finds the write lock taken raises NeedsThread (its busy timeout
    is 0, so it never waits); a write that ran is remembered (LoopTask.wrote)."""
    task = _LOOP.get()
    if task is None:
        return raw.execute(sql, params)
    try:
        cursor = raw.execute(sql, params)
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF in _BUSY:
            raise NeedsThread() from exc
        raise
    _written(task, sql)
    return cursor


def _written(task: LoopTask, sql: str) -> None:
    if not sql.startswith(("SELECT", "BEGIN", "ROLLBACK")) and getattr(task.db, _OPEN, None) is None:
        task.wrote = True  # committed by itself (in a transaction: when it commits)


def fetchone(sql: str, params: list, wrote: Callable[[tuple | None], bool] | None = None) -> tuple | None:
    """Run one statement and return its first row (None when it returns none). `wrote`, for a PostgreSQL statement
    that always returns a row: whether that row says it wrote (else: whether it returned a row)."""
    db = _connection()
    if db.vendor == "postgresql":
        return _postgres_fetchone(db, sql, params, wrote)
    with db.wrap_database_errors:
        cursor = _sqlite_execute(db.connection, _qmark(sql), params)
        try:
            return cursor.fetchone() if cursor.description else None
        finally:
            cursor.close()


def _postgres_fetchone(db, sql: str, params: list, wrote: Callable[[tuple | None], bool] | None) -> tuple | None:
    with _statement(db):
        result = postgres_statements.run(db.connection, sql, params)
    task = _LOOP.get()
    # audit.open_row_checked() says whether its statement wrote; any other wrote if it returned or changed rows
    if task is not None and (wrote(result.row) if wrote is not None else result.rowcount != 0):
        _written(task, sql)
    return result.row


@contextmanager
def _statement(db) -> Iterator[None]:
    """Around one statement on the driver connection: its error is Django's (wrap_database_errors). On the loop's
    PostgreSQL connection, a statement that failed because the connection is lost, nothing of the task having been
    committed, raises NeedsThread instead (the task runs again on a thread, which connects anew)."""
    try:
        with db.wrap_database_errors:
            yield
    except Exception as exc:
        task = _LOOP.get()
        if task is not None and task.postgres is not None and not task.wrote and task.postgres.lost_by(exc):
            raise NeedsThread() from exc
        raise


def in_transaction() -> bool:
    db = database()
    return db.in_atomic_block or getattr(db, _OPEN, None) is not None


def after_commit(callback: Callable[[], None]) -> None:
    """Run `callback` once the current transaction commits (at once outside one)."""
    db = database()
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
    task = _LOOP.get()
    db, loop = _connection(), task is not None
    if loop and getattr(db, _OPEN, None) is not None:  # inside the loop's own transaction: part of it
        yield
        return
    if not loop and (db.in_atomic_block or getattr(db, _OPEN, None) is not None or not db.get_autocommit()):
        with django_transaction.atomic():
            yield
        return
    callbacks: list[Callable[[], None]] = []
    _begin(db)
    setattr(db, _OPEN, callbacks)
    try:
        yield
        setattr(db, _OPEN, None)
        _end(db, "COMMIT", task)
        if loop:
            task.wrote = True
    except BaseException:
        setattr(db, _OPEN, None)
        _end(db, "ROLLBACK", task)  # the block failed, or its commit did
        raise
    for callback in callbacks:
        callback()


def _begin(db) -> None:
    with _statement(db):
        if db.vendor == "sqlite":
            _sqlite_execute(db.connection, "BEGIN IMMEDIATE")
        else:
            postgres_statements.command(db.connection, b"BEGIN")


def _end(db, statement: str, task: LoopTask | None) -> None:
    raw = db.connection
    if task is not None and task.postgres is not None and task.postgres.lost and statement == "ROLLBACK":
        return  # its transaction is gone with it
    with _statement(db):
        if db.vendor == "sqlite":  # the sqlite3 module keeps its own view of the transaction
            raw.commit() if statement == "COMMIT" else raw.rollback()
        else:
            postgres_statements.command(raw, statement.encode())
