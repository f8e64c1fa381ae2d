"""gateway/calls/loop_database.py: on an SQLite file the hot path's admission and settlement run on the event
loop's own connection, never waiting there; a locked database or a step that needs the ORM sends the task, whole,
to a database thread, and nothing is written twice.

In-process on the test database, so these run where it is SQLite (`make test`); on PostgreSQL test_loop_postgres.py
covers the loop's own PostgreSQL connections, and tests/e2e/test_sqlite_loop_connection.py runs a served gateway on
an SQLite file on every database."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from django.db import connection

from gateway.calls import loop_database
from gateway.models import Call, Counter
from tests.calls.loop_tasks import Hops, admit_and_settle, echo_server

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def sqlite_file_only():
    if connection.vendor != "sqlite":
        pytest.skip("the event loop's own SQLite connection needs an SQLite file; on PostgreSQL "
                    "tests/calls/test_loop_postgres.py covers the loop's own connections, and "
                    "tests/e2e/test_sqlite_loop_connection.py the served SQLite path")
    yield
    loop_database.close_all()


@pytest.fixture
def echo(db):
    return echo_server()


def test_a_locked_database_sends_the_task_to_a_thread_which_waits_and_the_loop_never_stops(echo, monkeypatch):
    server, token = echo
    path = connection.settings_dict["NAME"]
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:  # another process's writer: the dashboard, a command
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(10)
        other.execute("COMMIT")
        other.close()

    async def scenario():
        await admit_and_settle(server, token)
        hops = Hops(monkeypatch)
        holder = threading.Thread(target=hold_the_write_lock)
        holder.start()
        locked.wait(5)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
                if ticks == 20:  # the loop went on for 0.2 s while the call waited for the lock: let it go
                    release.set()

        beat = asyncio.create_task(ticker())
        call_id = await admit_and_settle(server, token)
        beat.cancel()
        holder.join(10)
        return call_id, ticks, hops.tasks

    call_id, ticks, tasks = asyncio.run(scenario())
    assert ticks >= 20  # the call could finish only after the release, which only the running loop gave
    assert "admit" in tasks[0]  # the admission went to a thread; written there once
    assert Call.objects.filter(pk=call_id, outcome="ok").count() == 1
    assert Call.objects.count() == 2 and Counter.objects.get().n == 2


def test_the_loop_connection_never_checkpoints_and_a_database_thread_does_every_few_commits(echo, monkeypatch):
    server, token = echo
    monkeypatch.setattr(loop_database, "CHECKPOINT_EVERY", 4)
    checkpoints = []
    real = loop_database._passive_checkpoint
    monkeypatch.setattr(loop_database, "_passive_checkpoint",
                        lambda: (checkpoints.append(threading.current_thread().name), real()))

    async def scenario():
        for _ in range(12):  # about 24 commits: an admission and a settlement each
            await admit_and_settle(server, token)
            own = loop_database._local.connection
            if own.checkpointing is not None:  # one at a time; calls go on meanwhile
                await own.checkpointing
        raw = own.wrapper.connection
        return [raw.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("wal_autocheckpoint", "busy_timeout", "temp_store")]

    autocheckpoint, busy_timeout, temp_store = asyncio.run(scenario())
    assert autocheckpoint == 0 and busy_timeout == 0
    assert temp_store == 2  # MEMORY: no temporary file is created and deleted on the loop
    assert len(checkpoints) >= 3 and all(name.startswith("portcullis-db") for name in checkpoints)


def test_when_the_loop_connection_cannot_be_opened_the_task_runs_on_a_thread_and_opening_is_tried_again(
        echo, monkeypatch):
    from django.db import OperationalError

    server, token = echo
    real = loop_database._new_wrapper
    attempts = []

    def failing():
        attempts.append(1)
        if len(attempts) == 1:
            raise OperationalError("unable to open database file")
        return real()

    monkeypatch.setattr(loop_database, "_new_wrapper", failing)

    async def scenario():
        where = await loop_database.run(lambda: threading.current_thread().name)
        await admit_and_settle(server, token)
        return where

    assert asyncio.run(scenario()).startswith("portcullis-db")
    assert len(attempts) == 2 and loop_database._local.connection is not None
    assert Call.objects.filter(outcome="ok").count() == 1
