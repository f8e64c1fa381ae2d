"""The event loop's own connections, whichever the database (an SQLite file: loop_database.py; PostgreSQL:
loop_postgres.py): once open, a call is admitted and settled on the loop's thread without a hop; a step that needs
the ORM sends the task to a thread before anything is written; a task that committed there and then needs a
database thread is refused and logged, never run twice."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway import calls
from gateway.calls import admission, loop_database, prepared
from gateway.models import Call, Counter, Server
from tests.calls.loop_tasks import Hops, admit_and_settle, echo_server

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def echo(db):
    yield echo_server()
    loop_database.close_all()


def test_a_task_that_committed_on_the_loop_and_then_needs_a_thread_is_refused_not_run_twice(echo):
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


def test_once_open_a_call_is_admitted_and_settled_on_the_loop_thread_without_a_hop(echo, monkeypatch):
    server, token = echo

    async def scenario():
        await admit_and_settle(server, token)  # opens a connection and fills the caches
        Hops(monkeypatch, refuse=True)
        loop_thread = threading.get_ident()
        ran_on = []
        real_admit = calls.admit

        def admit(*args, **kwargs):
            ran_on.append(threading.get_ident())
            return real_admit(*args, **kwargs)

        monkeypatch.setattr(calls, "admit", admit)
        call_ids = [await admit_and_settle(server, token) for _ in range(5)]
        assert ran_on == [loop_thread] * 5
        return call_ids

    call_ids = asyncio.run(scenario())
    assert sorted(Call.objects.filter(pk__in=call_ids).values_list("outcome", flat=True)) == ["ok"] * 5
    assert Counter.objects.get().n == 6

def test_a_step_that_needs_the_orm_goes_to_a_thread_before_anything_is_written(echo, monkeypatch):
    server, token = echo

    async def scenario():
        await admit_and_settle(server, token)
        admission._PARSED.clear()  # the policy must be read through the ORM again: that step needs a thread
        hops = Hops(monkeypatch)
        await admit_and_settle(server, token)
        first = list(hops.tasks)
        await admit_and_settle(server, token)  # the cache is filled again: back on the loop
        return first, hops.tasks

    first, tasks = asyncio.run(scenario())
    assert [t for t in first if "admit" in t] == ["admit"] and tasks == first
    assert Call.objects.count() == 3 and Counter.objects.get().n == 3  # nothing written twice
