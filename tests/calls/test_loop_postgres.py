"""gateway/calls/loop_postgres.py: on PostgreSQL the hot path's admission and settlement run on the event loop's own
connections (the task's synchronous code in a greenlet, its waits for the socket served by the loop); calls
interleave, each connection writes its own audit chain, and a lost connection, a step that needs the ORM or a
cancelled caller never loses or doubles a write.

In-process on the test database, so these run where it is PostgreSQL (CI: `.ci/run`); on SQLite
tests/calls/test_loop_database.py covers the loop's own SQLite connection."""

from __future__ import annotations

import asyncio
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from gateway import calls, policies
from gateway.calls import audit_chain, dbthreads, loop_database, loop_postgres
from gateway.models import Call, Counter
from tests.calls.loop_tasks import ARGUMENTS, Hops, admit_and_settle, echo_server

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("the event loop's own PostgreSQL connections need PostgreSQL (CI runs the suite on it: "
                    ".ci/run); on SQLite tests/calls/test_loop_database.py covers the loop's own connection")
    dbthreads.close_connections()  # a new pool: its threads start new audit chains, as the table is empty
    audit_chain._heads.clear()
    yield
    loop_postgres.close_all()
    dbthreads.close_connections()
    audit_chain._heads.clear()


@pytest.fixture
def echo(db):
    return echo_server()


def verify() -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", "--no-archive", stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code), err.getvalue()
    return 0, out.getvalue()


def test_calls_interleave_on_several_connections_each_writing_its_own_chain_and_the_log_verifies(echo, monkeypatch):
    server, token = echo
    waits = []
    real_ready = loop_postgres._ready

    async def counted(loop, own, events):
        waits.append(id(own))
        return await real_ready(loop, own, events)

    monkeypatch.setattr(loop_postgres, "_ready", counted)

    async def scenario():
        await admit_and_settle(server, token)
        Hops(monkeypatch, refuse=True)
        ticks = 0

        async def ticker() -> None:  # the loop goes on while the calls wait for the database
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        running = asyncio.create_task(ticker())
        call_ids = await asyncio.gather(*(admit_and_settle(server, token) for _ in range(24)))
        running.cancel()
        return call_ids, ticks

    call_ids, ticks = asyncio.run(scenario())
    assert len(set(call_ids)) == 24 and ticks > 24
    assert 1 < len(set(waits)) <= loop_postgres.POOL_SIZE  # several connections, at most the pool's size
    chains = set(Call.objects.filter(pk__in=call_ids).values_list("chain", flat=True))
    assert 1 < len(chains) <= loop_postgres.POOL_SIZE
    for chain in set(Call.objects.values_list("chain", flat=True)):  # rows numbered 1, 2, 3 … no gap, no repeat
        seqs = sorted(Call.objects.filter(chain=chain).values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))
    code, text = verify()
    assert code == 0, text
    assert Counter.objects.get().n == 25 and Call.objects.filter(outcome="ok").count() == 25


def test_a_full_counter_that_escalates_to_a_person_is_held_not_refused_as_a_failed_task(echo):
    """On PostgreSQL a single counter and the row are one statement; a full counter writes nothing, so the task may
    still go to a thread to hold the call for a person."""
    server, token = echo
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"echo": {"limits": [
        {"counter": "echo", "window": "day", "max": 1, "scope": "grant", "on_exceed": "approve"}]}}}, actor="test")

    async def scenario():
        first = await loop_database.run(calls.admit, token, server, "echo", ARGUMENTS, timezone.now())
        second = await loop_database.run(calls.admit, token, server, "echo", ARGUMENTS, timezone.now())
        return first, second

    first, second = asyncio.run(scenario())
    assert first.forward and not second.forward and second.held is not None
    assert list(Call.objects.order_by("id").values_list("decision", "outcome")) == [
        ("allow", "pending"), ("approve", "pending")]
    assert Counter.objects.get().n == 1


def test_a_lost_connection_sends_the_call_to_a_thread_and_a_new_one_is_opened(echo, monkeypatch):
    server, token = echo

    async def scenario():
        await admit_and_settle(server, token)
        await dbthreads.run(lambda: None)  # the thread's connection exists before the loop's is killed
        killed = await dbthreads.run(_terminate_loop_connection)
        hops = Hops(monkeypatch)
        lost_call = await admit_and_settle(server, token)  # its first statement finds the connection gone
        first = list(hops.tasks)
        again = await admit_and_settle(server, token)  # on a new connection of the loop
        return killed, first, hops.tasks, lost_call, again

    killed, first, tasks, lost_call, again = asyncio.run(scenario())
    assert killed == 1
    # The admission ran again on a thread; the settlement opened a new connection (on a thread) and ran on it.
    assert first == ["admit", "_connect"] and tasks == first
    assert Call.objects.filter(pk__in=[lost_call, again], outcome="ok").count() == 2
    assert Call.objects.count() == 3 and Counter.objects.get().n == 3  # nothing refused, nothing doubled
    assert verify()[0] == 0


def _terminate_loop_connection() -> int:
    """pg_terminate_backend on the loop's connection (the one this thread does not hold)."""
    from django.db import connection as thread_connection

    with thread_connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        mine = cursor.fetchone()[0]
    pools = list(loop_postgres._pools)
    pids = [own.wrapper.connection.info.backend_pid for pool in pools for own in pool.idle]
    assert pids and mine not in pids
    with thread_connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid) t",
                       [pids])
        return cursor.fetchone()[0]


def test_a_cancelled_call_still_finishes_its_database_work_and_its_connection_goes_back_clean(echo):
    server, token = echo
    started = []
    real_admit = calls.admit

    def admit(*args, **kwargs):
        started.append(1)
        return real_admit(*args, **kwargs)

    async def scenario():
        await admit_and_settle(server, token)
        pool = loop_postgres._pool()
        waiting = asyncio.Event()
        real_ready = loop_postgres._ready

        async def announced(loop, own, events):
            waiting.set()  # the admission is waiting for the database's answer
            return await real_ready(loop, own, events)

        loop_postgres._ready = announced
        try:
            call = asyncio.create_task(loop_database.run(admit, token, server, "echo", ARGUMENTS, timezone.now()))
            await waiting.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        finally:
            loop_postgres._ready = real_ready
        states = [own.wrapper.connection.info.transaction_status for own in pool.idle]
        await admit_and_settle(server, token)  # the pool still serves
        return states, len(pool.open)

    states, connections = asyncio.run(scenario())
    assert started == [1]
    assert states and all(state == 0 for state in states)  # idle, not inside a transaction
    assert connections == 1
    # The cancelled admission was written whole: its row (pending: nobody forwarded it) and its count.
    assert Call.objects.filter(outcome="pending").count() == 1
    assert Counter.objects.get().n == 3
    assert verify()[0] == 0
