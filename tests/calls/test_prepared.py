"""gateway/calls/prepared.py: hot-path statements run in Django's transactions and, on PostgreSQL, are prepared."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction

from gateway.calls import prepared
from gateway.models import Server

pytestmark = pytest.mark.django_db(transaction=True)

SQL = f"SELECT slug, enabled FROM {Server._meta.db_table} WHERE slug = %s"  # noqa: S608 - a model's table name


def test_rows_come_back_and_a_statement_without_rows_returns_none(server):
    assert prepared.fetchone(SQL, [server.slug]) == (server.slug, True)
    assert prepared.fetchone(SQL, ["no-such-server"]) is None
    update = f"UPDATE {Server._meta.db_table} SET enabled = %s WHERE slug = %s"  # noqa: S608
    assert prepared.fetchone(update, [False, server.slug]) is None
    server.refresh_from_db()
    assert server.enabled is False


def test_a_statement_inside_atomic_rolls_back_with_it(server):
    update = f"UPDATE {Server._meta.db_table} SET enabled = %s WHERE slug = %s"  # noqa: S608
    with pytest.raises(RuntimeError), transaction.atomic():
        prepared.fetchone(update, [False, server.slug])
        raise RuntimeError("roll back")
    server.refresh_from_db()
    assert server.enabled is True


def test_on_postgresql_the_statement_is_prepared_once_per_connection(server):
    prepared.fetchone(SQL, [server.slug])
    prepared.fetchone(SQL, [server.slug])
    if connection.vendor != "postgresql":
        assert connection.vendor == "sqlite"  # the other supported database runs it on a plain Django cursor
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                       [f"SELECT slug, enabled FROM {Server._meta.db_table}%"])  # noqa: S608
        assert cursor.fetchone()[0] == 1
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_generic_plan"


@pytest.mark.parametrize("value", [
    datetime(2026, 12, 4, 16, 30, 5, 123456, tzinfo=UTC),
    datetime(2026, 12, 4, 16, 30, 5, tzinfo=UTC),  # no microseconds: Django writes none either
    datetime(2026, 12, 4, 17, 30, 5, 7, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=ZoneInfo("Europe/Paris")),
    None,
])
def test_a_datetime_is_adapted_exactly_as_django_adapts_it(value):
    assert prepared.adapt_time(value) == connection.ops.adapt_datetimefield_value(value)
