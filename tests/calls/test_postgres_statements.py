"""gateway/calls/postgres_statements.py: the hot path's statements run on a psycopg connection without a cursor
give what a psycopg cursor gives (rows, row counts, types through the connection's adapters, errors), take part in
Django's transactions, and survive their prepared statements being dropped by someone else.

On the real server, so these run where the test database is PostgreSQL (CI: `.ci/run`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from gateway.calls import postgres_statements, prepared
from gateway.models import Call, Counter

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(connection.vendor != "postgresql",
                                 reason="statements without a psycopg cursor are PostgreSQL's (CI runs the suite on "
                                        "it: .ci/run); on SQLite the hot path's statements are tested through "
                                        "tests/calls/test_prepared.py")]


@pytest.fixture
def raw():
    connection.ensure_connection()
    return connection.connection


INSERT = "INSERT INTO gateway_counter (key, window_end, n) VALUES (%s, %s, %s)"
TYPED = ("SELECT %s::bigint, %s::text, %s::boolean, %s::double precision, %s::timestamptz, %s::jsonb, "
         "%s::text IS NULL")


def typed_values() -> list:
    when = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)
    return [2**40, "é \u2603 '; --", True, 1.25, when,
            connection.ops.adapt_json_value({"a": [1, None, "x"]}, None), None]


def through_a_cursor(raw, sql: str, params: list) -> tuple:
    with psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone(), cursor.rowcount


def test_a_row_comes_back_as_a_psycopg_cursor_gives_it_through_the_same_adapters(raw):
    result = postgres_statements.run(raw, TYPED, typed_values())
    row, rowcount = through_a_cursor(raw, TYPED, typed_values())
    assert result.row == row and result.rowcount == rowcount == 1
    assert result.row[0] == 2**40 and result.row[1] == "é \u2603 '; --" and result.row[2] is True
    assert result.row[4] == datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)
    assert json.loads(result.row[5]) == {"a": [1, None, "x"]}  # Django's JSONField parses the text itself
    assert result.row[6] is True


def test_no_row_and_the_count_of_rows_changed(raw):
    assert Counter._meta.db_table == "gateway_counter"
    assert postgres_statements.run(raw, "SELECT 1 WHERE %s::int = 2", [1]).row is None
    for key in ("a", "b", "c"):
        postgres_statements.run(raw, INSERT,
                                [key, 10, 0])
    changed = postgres_statements.run(raw, "UPDATE gateway_counter SET n = n + 1 WHERE key <> %s", ["a"])
    assert changed.row is None and changed.rowcount == 2
    none = postgres_statements.run(raw, "UPDATE gateway_counter SET n = 1 WHERE key = %s", ["z"])
    assert none.row is None and none.rowcount == 0
    assert postgres_statements.run(raw, "SELECT key FROM gateway_counter WHERE n = %s ORDER BY key", [1]).row == ("b",)


def test_a_parameter_whose_type_changes_gets_a_statement_of_its_own(raw):
    sql = "SELECT %s::timestamptz IS NULL, %s::text"
    assert postgres_statements.run(raw, sql, [None, "a"]).row == (True, "a")
    later = datetime(2026, 1, 1, tzinfo=UTC)
    assert postgres_statements.run(raw, sql, [later, "b"]).row == (False, "b")
    assert postgres_statements.run(raw, sql, [None, "c"]).row == (True, "c")
    names = {row[0] for row in raw.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'portcullis_%'")}
    state = postgres_statements._state(raw)
    assert len({state.names[k] for k in state.names if b"IS NULL" in k[0]}) == 2
    assert {name.decode() for name in state.names.values()} <= names


def test_a_statement_inside_a_django_transaction_is_part_of_it(raw):
    with pytest.raises(RuntimeError), transaction.atomic():
        postgres_statements.run(raw, INSERT,
                                ["rolled-back", 10, 1])
        assert Counter.objects.filter(key="rolled-back").exists()
        raise RuntimeError("the block fails")
    assert not Counter.objects.filter(key="rolled-back").exists()
    with transaction.atomic():
        postgres_statements.run(raw, INSERT,
                                ["kept", 10, 1])
    assert Counter.objects.filter(key="kept").exists()


def test_the_hot_path_transaction_commits_and_rolls_back_on_the_driver_connection():
    with pytest.raises(RuntimeError), prepared.transaction():
        prepared.fetchone(INSERT, ["gone", 10, 1])
        raise RuntimeError("the block fails")
    with prepared.transaction():
        prepared.fetchone(INSERT, ["kept", 10, 1])
    assert list(Counter.objects.values_list("key", flat=True)) == ["kept"]
    assert connection.connection.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_an_error_is_psycopgs_own_for_its_sqlstate_and_the_connection_goes_on(raw):
    sql = INSERT
    postgres_statements.run(raw, sql, ["once", 10, 1])
    with pytest.raises(psycopg.errors.UniqueViolation):
        postgres_statements.run(raw, sql, ["once", 10, 1])
    with pytest.raises(IntegrityError):  # through prepared: Django's error, as from Django's own cursors
        prepared.fetchone(sql, ["once", 10, 1])
    assert postgres_statements.run(raw, "SELECT count(*) FROM gateway_counter WHERE key = %s", ["once"]).row == (1,)


def test_statements_dropped_by_someone_else_are_prepared_again(raw):
    sql = "SELECT %s::int + 1"
    assert postgres_statements.run(raw, sql, [1]).row == (2,)
    raw.execute("DEALLOCATE ALL")
    assert postgres_statements.run(raw, sql, [2]).row == (3,)  # outside a transaction: at once
    raw.execute("DEALLOCATE ALL")
    with pytest.raises(psycopg.errors.InvalidSqlStatementName), transaction.atomic():
        postgres_statements.run(raw, sql, [3])  # inside one: it fails with the transaction
    assert postgres_statements.run(raw, sql, [4]).row == (5,)


def test_the_audit_insert_round_trips_the_row_as_the_orm_reads_it():
    now = datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC)
    from gateway.calls import audit

    call_id = audit.open_row(server_slug="s", tool_name="t\u2603", arguments={"path": "/a", "n": 1}, decision="allow",
                             created_at=now, counters=["k:1"], reason="why")
    audit.close_row(call_id, outcome="ok", latency_ms=1.5, result_size=10, error="", now=now + timedelta(seconds=1))
    row = Call.objects.get(pk=call_id)
    assert (row.tool_name, row.arguments, row.counters, row.outcome) == ("t\u2603", {"path": "/a", "n": 1}, ["k:1"],
                                                                         "ok")
    assert row.created_at == now and row.finished_at == now + timedelta(seconds=1) and row.latency_ms == 1.5
