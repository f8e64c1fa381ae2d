"""The hot path's fixed statements, prepared once per connection on PostgreSQL.

Django runs PostgreSQL queries with client-side binding and no prepared statements (so that transaction-mode
connection poolers work), which makes the server parse and plan every statement again: for the call's one read
query, planning cost six times its execution (pg_stat_statements, `python -m bench`). The few statements of a
tools/call are fixed text, so here they go through a server-binding psycopg cursor on Django's own connection
and are prepared on first use; psycopg keeps the prepared statements per connection (a new connection prepares
again). Transactions are Django's: a statement inside `transaction.atomic()` runs in that transaction.

Behind PgBouncer in transaction mode, prepared statements need PgBouncer ≥ 1.21 with `max_prepared_statements`
set (docs/ARCHITECTURE.md). SQLite has no planning cost worth saving: the statements run on a Django cursor.
"""

from __future__ import annotations

from django.db import connection


def fetchone(sql: str, params: list) -> tuple | None:
    """Run one statement and return its first row (None when it returns none)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() if cursor.description else None
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone() if cursor.description else None
