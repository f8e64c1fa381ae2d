"""gateway/calls/loop_database.py: on an SQLite file the hot path's admission and settlement run on the event
loop's own connection, never waiting there; a locked database or a step that needs the ORM sends the task, whole,
to a database thread, and nothing is written twice.

In-process on the test database, so these run where it is SQLite (`make test`); on PostgreSQL the threads are used
by design, and tests/e2e/test_sqlite_loop_connection.py runs a served gateway on an SQLite file on every database."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from django.db import connection
from django.utils import timezone

from gateway import calls, policies
from gateway.calls import admission, dbthreads, loop_database, prepared
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import Call, Counter, Server

pytestmark = [pytest.mark.django_db(transaction=True)]

ARGUMENTS = {"text": "hello"}


@pytest.fixture(autouse=True)
def sqlite_file_only():
    if connection.vendor != "sqlite":
        pytest.skip("the event loop's own connection is for SQLite files; on PostgreSQL the database threads run "
                    "every task (tests/e2e/test_sqlite_loop_connection.py covers the served path there)")
    yield
    loop_database.close_all()


@pytest.fixture
def echo(db):
    server = Server.objects.create(slug="echo", name="Echo", transport=Server.Transport.STDIO, command=["echo"])
    sync_tools(server, [{"name": "echo", "inputSchema": {"type": "object"}}], timezone.now())
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"echo": {"limits": [
        {"counter": "echo", "window": "day", "max": 1000, "scope": "grant"}]}}}, actor="test")
    return server, create_grant("loop-agent", [server], None).token


class Hops:
    """Counts the tasks sent to a database thread (and, with `refuse`, fails the test if there is one)."""

    def __init__(self, monkeypatch, refuse: bool = False) -> None:
        self.tasks: list[str] = []
        real = dbthreads.run

        async def counted(func, /, *args, **kwargs):
            self.tasks.append(getattr(func, "__qualname__", repr(func)))
            assert not refuse, f"{func} was sent to a database thread"
            return await real(func, *args, **kwargs)

        monkeypatch.setattr(dbthreads, "run", counted)


def admit_and_settle(server, token) -> int:
    async def one() -> int:
        now = timezone.now()
        granted = await loop_database.run(calls.admit, token, server, "echo", ARGUMENTS, now)
        assert granted.forward, granted.message
        await loop_database.run(calls.settle, granted, outcome="ok", latency_ms=1.0, result_size=2, error="", now=now)
        return granted.call_id

    return one


def test_once_open_a_call_is_admitted_and_settled_on_the_loop_thread_without_a_hop(echo, monkeypatch):
    server, token = echo

    async def scenario():
        await admit_and_settle(server, token)()  # opens the loop's connection and fills the caches
        Hops(monkeypatch, refuse=True)
        loop_thread = threading.get_ident()
        ran_on = []
        real_admit = calls.admit

        def admit(*args, **kwargs):
            ran_on.append(threading.get_ident())
            return real_admit(*args, **kwargs)

        monkeypatch.setattr(calls, "admit", admit)
        call_ids = [await admit_and_settle(server, token)() for _ in range(5)]
        assert ran_on == [loop_thread] * 5
        return call_ids

    call_ids = asyncio.run(scenario())
    rows = Call.objects.filter(pk__in=call_ids)
    assert sorted(rows.values_list("outcome", flat=True)) == ["ok"] * 5
    assert Counter.objects.get().n == 6


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
        await admit_and_settle(server, token)()
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
        call_id = await admit_and_settle(server, token)()
        beat.cancel()
        holder.join(10)
        return call_id, ticks, hops.tasks

    call_id, ticks, tasks = asyncio.run(scenario())
    assert ticks >= 20  # the call could finish only after the release, which only the running loop gave
    assert "admit" in tasks[0]  # the admission went to a thread; written there once
    assert Call.objects.filter(pk=call_id, outcome="ok").count() == 1
    assert Call.objects.count() == 2 and Counter.objects.get().n == 2


def test_a_step_that_needs_the_orm_goes_to_a_thread_before_anything_is_written(echo, monkeypatch):
    server, token = echo

    async def scenario():
        await admit_and_settle(server, token)()
        admission._PARSED.clear()  # the policy must be read through the ORM again: that step needs a thread
        hops = Hops(monkeypatch)
        await admit_and_settle(server, token)()
        first = list(hops.tasks)
        await admit_and_settle(server, token)()  # the cache is filled again: back on the loop
        return first, hops.tasks

    first, tasks = asyncio.run(scenario())
    assert [t for t in first if "admit" in t] == ["admit"] and tasks == first
    assert Call.objects.count() == 3 and Counter.objects.get().n == 3  # nothing written twice


def test_a_task_that_committed_on_the_loop_and_then_needs_a_thread_is_refused_not_run_twice(echo, monkeypatch):
    server, _ = echo
    runs = []

    def write_then_need_the_orm() -> None:
        runs.append(1)
        prepared.fetchone(f"UPDATE {Server._meta.db_table} SET name = name || %s WHERE id = %s",  # noqa: S608
                          ["!", server.pk])
        prepared.needs_thread()

    async def scenario():
        await loop_database.run(lambda: None)  # opens the connection
        with pytest.raises(RuntimeError, match="could not finish"):
            await loop_database.run(write_then_need_the_orm)

    asyncio.run(scenario())
    assert runs == [1]
    assert Server.objects.get(pk=server.pk).name == "Echo!"


def test_the_loop_connection_never_checkpoints_and_a_database_thread_does_every_few_commits(echo, monkeypatch):
    server, token = echo
    monkeypatch.setattr(loop_database, "CHECKPOINT_EVERY", 4)
    checkpoints = []
    real = loop_database._passive_checkpoint
    monkeypatch.setattr(loop_database, "_passive_checkpoint",
                        lambda: (checkpoints.append(threading.current_thread().name), real()))

    async def scenario():
        for _ in range(12):  # about 24 commits: an admission and a settlement each
            await admit_and_settle(server, token)()
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
        await admit_and_settle(server, token)()
        return where

    assert asyncio.run(scenario()).startswith("portcullis-db")
    assert len(attempts) == 2 and loop_database._local.connection is not None
    assert Call.objects.filter(outcome="ok").count() == 1
