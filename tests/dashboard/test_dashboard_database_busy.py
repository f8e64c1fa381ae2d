"""While the database is locked or unavailable, a dashboard page answers 503 with what happened and what to do (and
Retry-After), never a 500; an htmx request gets the short text its error box shows. The lock is real on both
databases: another connection holds SQLite's write lock (BEGIN EXCLUSIVE), or PostgreSQL's EXCLUSIVE lock on the
servers table (reads go on, writes wait), while this one waits a short timeout. The outage is real too: the
connection points at a database that cannot be reached."""

from __future__ import annotations

import sqlite3

import pytest
from django.db import connection

from gateway.models import Server
from tests.dashboard.fixtures import htmx

pytestmark = pytest.mark.django_db(transaction=True)

BUSY = "the gateway's database is busy; try again in a few seconds"


def _sqlite_lock():
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 100")
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


def _postgresql_lock():
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '100ms'")
    settings = connection.get_connection_params()
    other = psycopg.connect(**settings)
    other.execute(f"LOCK TABLE {Server._meta.db_table} IN EXCLUSIVE MODE")  # noqa: S608 - a model's table
    return other


@pytest.fixture
def locked_database(db):
    """Another connection holds the write lock; this one gives up after 100 ms instead of 20 s."""
    other = _sqlite_lock() if connection.vendor == "sqlite" else _postgresql_lock()
    released = []

    def release():
        if not released:
            released.append(other.rollback() if connection.vendor != "sqlite" else other.execute("ROLLBACK"))

    yield release
    release()
    other.close()
    connection.close()  # the next connection gets the configured timeouts again


@pytest.fixture
def unreachable_database(db):
    """This process's connection points where no database answers: a closed port, or a file in no directory."""
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-portcullis-directory/db.sqlite3"
    else:
        connection.settings_dict.update(HOST="127.0.0.1", PORT="9")
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def test_a_change_while_another_connection_holds_the_lock_answers_503_saying_what_to_do(
        staff_client, http_server, locked_database):
    response = staff_client.post("/servers/remote/enabled/", {"enabled": "0", "confirm": "1"})
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert BUSY in body and "<title>" in body and "Traceback" not in body
    assert 'href="/">Back to the dashboard' in body  # a POST is not reloaded by a link
    assert Server.objects.get(slug="remote").enabled  # the change did not happen (reads go on in WAL mode)


def test_an_htmx_change_while_the_database_is_locked_gets_the_short_text_its_error_box_shows(
        staff_client, http_server, locked_database):
    response = staff_client.post("/servers/remote/enabled/", {"enabled": "0", "confirm": "1"}, **htmx())
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().strip() == BUSY


def test_a_page_while_the_database_is_unreachable_answers_503_not_500(
        staff_client, http_server, unreachable_database):
    response = staff_client.get("/?page=2")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    body = response.content.decode()
    assert BUSY in body and 'href="/?page=2">Reload this page' in body


def test_once_the_lock_is_gone_the_same_change_goes_through(staff_client, http_server, locked_database):
    assert staff_client.post("/servers/remote/enabled/", {"enabled": "0", "confirm": "1"}).status_code == 503
    locked_database()
    assert staff_client.post("/servers/remote/enabled/", {"enabled": "0", "confirm": "1"}).status_code == 302
    assert not Server.objects.get(slug="remote").enabled
