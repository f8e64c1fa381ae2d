"""The hot path's fixed statements on a psycopg connection, without a cursor.

A psycopg cursor costs more client CPU than the few statements a call runs: per statement it builds the cursor
and a new Transformer, converts the query again (the admission read is longer than psycopg's query cache takes,
so its placeholders were parsed on every call), looks the statement up in the connection's prepared-statement
cache and builds the result's state. Here each connection keeps, per statement text, the query converted once
and its server-side prepared statement, and one Transformer: a statement dumps its parameters with psycopg's own
dumpers (the connection's adapters, which Django configured), sends the prepared statement, and loads the first
row with psycopg's own loaders. Client CPU per statement, the audit insert: ~0.07 ms through a cursor, ~0.04 ms
here (docs/ARCHITECTURE.md, "Performance").

Same behaviour as a cursor's execute: a transaction that psycopg manages (Django's atomic()) is begun first,
the connection's lock is held, its `wait()` drives the exchange (on the event loop's own connections that is
loop_postgres.LoopConnection.wait), and a failed statement raises psycopg's own error for its SQLSTATE.
Statements are prepared under names of their own (`portcullis_N`), beside psycopg's, per connection and per
parameter types (a parameter's type can change, e.g. NULL against a timestamp). When the server no longer knows
them (someone ran DEALLOCATE ALL or DISCARD ALL), they are prepared again: the statement runs again at once
outside a transaction; inside one, it fails with the transaction and the next one prepares them.

This leans on two psycopg internals, `PostgresQuery` and `Connection._start_query`: psycopg is pinned, and the
tests in tests/calls/test_postgres_statements.py run every behaviour above against the real server.
"""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg._queries import PostgresQuery
from psycopg.adapt import Transformer
from psycopg.generators import execute

_FATAL = pq.ExecStatus.FATAL_ERROR
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_TEXT = pq.Format.TEXT
_UNKNOWN_STATEMENT = "26000"  # invalid_sql_statement_name: the prepared statement is gone


class Result:
    """What a statement gave back: its first row (None when it returned none) and how many rows it returned or
    changed (-1 when the server did not say)."""

    __slots__ = ("row", "rowcount")

    def __init__(self, row: tuple | None, rowcount: int) -> None:
        self.row, self.rowcount = row, rowcount


class _Statements:
    """One connection's converted queries, prepared statement names and Transformer."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.tx = Transformer(conn)
        self.queries: dict[str, PostgresQuery] = {}
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.encoding = conn.pgconn._encoding  # noqa: SLF001 - what psycopg's own cursors decode errors with


_STATE: weakref.WeakKeyDictionary[psycopg.Connection, _Statements] = weakref.WeakKeyDictionary()


def _state(conn: psycopg.Connection) -> _Statements:
    state = _STATE.get(conn)
    if state is None:
        state = _STATE[conn] = _Statements(conn)
    return state


def run(conn: psycopg.Connection, sql: str, params: list[Any]) -> Result:
    """Run one statement (`%s` placeholders) as a prepared statement and return its first row and row count."""
    state = _state(conn)
    with conn.lock:
        try:
            results = conn.wait(_run_gen(conn, state, sql, params))
        except errors.InvalidSqlStatementName:
            if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                raise  # the transaction failed with it: the caller's to roll back
            results = conn.wait(_run_gen(conn, state, sql, params))  # prepared again (_check forgot them all)
    result = results[-1]
    status = result.status
    if status == _TUPLES_OK:
        if result.ntuples == 0:
            return Result(None, 0)
        tx = state.tx
        tx.set_pgresult(result)
        row = tx.load_row(0, tuple)
        tx.set_pgresult(None)
        return Result(row, result.ntuples)
    count = result.command_tuples
    return Result(None, count if count is not None else -1)


def _run_gen(conn: psycopg.Connection, state: _Statements, sql: str, params: list[Any]):
    yield from conn._start_query()  # noqa: SLF001 - BEGIN, when psycopg manages the transaction (atomic())
    pgconn = conn.pgconn
    query = state.queries.get(sql)
    if query is None:
        query = PostgresQuery(state.tx)
        query.convert(sql, params)
        state.queries[sql] = query
    else:
        query.dump(params)
    key = (query.query, query.types)
    name = state.names.get(key)
    if name is None:
        name = f"portcullis_{len(state.names)}".encode()
        pgconn.send_prepare(name, query.query, param_types=query.types)
        _check((yield from execute(pgconn)), state)
        state.names[key] = name
    pgconn.send_query_prepared(name, query.params, param_formats=query.formats, result_format=_TEXT)
    results = yield from execute(pgconn)
    _check(results, state)
    return results


def _check(results: list[pq.abc.PGresult], state: _Statements) -> None:
    if not results:
        raise errors.InternalError("got no result from the statement")
    for result in results:
        status = result.status
        if status == _TUPLES_OK or status == _COMMAND_OK:
            continue
        if status == _FATAL:
            error = errors.error_from_result(result, encoding=state.encoding)
            if error.sqlstate == _UNKNOWN_STATEMENT:
                state.names.clear()  # prepared again on the next call
            raise error
        raise errors.InternalError(f"unexpected result status: {pq.ExecStatus(status).name}")


def command(conn: psycopg.Connection, statement: bytes) -> None:
    """A statement without parameters or rows (BEGIN, COMMIT, ROLLBACK), sent as a simple query."""
    state = _state(conn)
    with conn.lock:
        conn.wait(_command_gen(conn.pgconn, state, statement))


def _command_gen(pgconn, state: _Statements, statement: bytes):
    pgconn.send_query(statement)
    _check((yield from execute(pgconn)), state)
