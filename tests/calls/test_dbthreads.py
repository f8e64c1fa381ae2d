"""dbthreads: the hot path's database hops and the batched outcome writes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.calls import dbthreads

pytestmark = pytest.mark.asyncio


async def test_run_executes_on_a_database_thread_with_the_callers_context():
    import contextvars

    who = contextvars.ContextVar("who")
    who.set("agent-1")
    name, seen = await dbthreads.run(lambda: (threading.current_thread().name, who.get()))
    assert name.startswith("portcullis-db") and seen == "agent-1"


class Recorder:
    """The write functions of a Batch. With the gate closed, a write starts (`started` is set) and waits until
    the test opens the gate: what queues meanwhile is decided by events, not by how long a sleep lasts."""

    def __init__(self, fail_on: set | None = None, fail_all: bool = False) -> None:
        self.writes: list[list] = []
        self.fail_on, self.fail_all = fail_on or set(), fail_all
        self.lock = threading.Lock()
        self.started, self.gate = threading.Event(), threading.Event()
        self.gate.set()

    def close_gate(self) -> None:
        self.started.clear()
        self.gate.clear()

    def _wait_for_the_gate(self) -> None:
        self.started.set()
        assert self.gate.wait(10), "the test never opened the gate"

    def one(self, item) -> None:
        self._wait_for_the_gate()
        if item in self.fail_on:
            raise ValueError(item)
        with self.lock:
            self.writes.append([item])

    def all(self, items: list) -> None:
        self._wait_for_the_gate()
        if self.fail_all or self.fail_on & set(items):
            raise ValueError(items)
        with self.lock:
            self.writes.append(list(items))


async def write_started(rec: Recorder) -> None:
    assert await asyncio.to_thread(rec.started.wait, 10), "the write never started"


async def test_outcomes_waiting_together_are_written_together_and_each_caller_waits_for_its_own():
    rec = Recorder()
    batch = dbthreads.Batch(rec.one, rec.all)
    await asyncio.gather(*(batch.submit(i) for i in range(10)))
    assert rec.writes == [list(range(10))]  # submitted in one tick: one write
    rec.writes.clear()
    rec.close_gate()
    first = asyncio.create_task(batch.submit(0))
    await write_started(rec)  # its write is running; the next ones queue behind it and go together
    rest = [asyncio.create_task(batch.submit(i)) for i in range(1, 10)]
    await asyncio.sleep(0)  # a yield, not a wait: the nine are queued
    rec.gate.set()
    await asyncio.gather(first, *rest)
    assert rec.writes == [[0], list(range(1, 10))]


async def test_a_lone_outcome_is_written_on_its_own():
    rec = Recorder()
    batch = dbthreads.Batch(rec.one, rec.all)
    for i in range(3):
        await batch.submit(i)
    assert rec.writes == [[0], [1], [2]]


async def test_a_failing_batch_falls_back_to_one_by_one_and_only_the_bad_item_fails():
    rec = Recorder(fail_on={5})
    batch = dbthreads.Batch(rec.one, rec.all)
    results = await asyncio.gather(*(batch.submit(i) for i in range(8)), return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [5]
    assert sorted(x for write in rec.writes for x in write) == [0, 1, 2, 3, 4, 6, 7]


async def test_an_outcome_is_written_even_when_its_caller_is_cancelled():
    rec = Recorder()
    rec.close_gate()
    batch = dbthreads.Batch(rec.one, rec.all)
    first = asyncio.create_task(batch.submit("first"))
    await write_started(rec)
    second = asyncio.create_task(batch.submit("second"))
    await asyncio.sleep(0)  # a yield: "second" is queued behind the running write
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    rec.gate.set()
    await first
    for _ in range(500):  # bounded poll: the queued write runs on the database thread after `first`
        if any("second" in w for w in rec.writes):
            break
        await asyncio.sleep(0.01)
    assert ["second"] in rec.writes


async def test_close_connections_runs_on_every_database_thread_and_a_new_pool_follows():
    await dbthreads.run(lambda: None)
    dbthreads.close_connections()
    assert dbthreads._POOL is None
    name = await dbthreads.run(lambda: threading.current_thread().name)
    assert name.startswith("portcullis-db")


def _on_every_database_thread(func) -> list:
    """Run func once on each database thread (a barrier keeps any thread from taking two)."""
    workers = dbthreads._pool()._max_workers
    barrier = threading.Barrier(workers)

    def each():
        barrier.wait(timeout=10)
        try:
            return func()
        except Exception as exc:  # noqa: BLE001 - the test looks at what each thread saw
            return exc

    return [f.result(timeout=20) for f in [dbthreads._pool().submit(each) for _ in range(workers)]]


@pytest.mark.django_db(transaction=True)
async def test_a_lost_connection_is_replaced_and_the_task_runs_once_more_on_a_fresh_one(server):
    """What a database restart looks like to the database threads: their connections are dead. No task fails."""
    from django.db import connection

    from gateway.calls import prepared

    def count_servers():
        return prepared.fetchone("SELECT count(*) FROM gateway_server", [])[0]

    def kill_connection():
        connection.ensure_connection()
        connection.connection.close()  # the driver's connection, under Django's feet

    assert await dbthreads.run(count_servers) == 1
    await asyncio.to_thread(_on_every_database_thread, kill_connection)
    first = await asyncio.to_thread(_on_every_database_thread,
                                    lambda: dbthreads._on_a_sound_connection(count_servers, (), {}))
    assert first == [1] * len(first)  # each thread's next task ran on a new connection
    after = [await dbthreads.run(count_servers) for _ in range(8)]
    assert after == [1] * 8


@pytest.mark.django_db(transaction=True)
async def test_a_task_whose_transaction_fails_on_a_lost_connection_runs_once_more(server):
    """A task that opens its own transaction on a dead connection: the rollback fails, Django drops the connection
    and connects again to restore autocommit, so the thread's connection looks healthy afterwards. The task still
    failed on a lost connection and runs once more (a session's row is written this way at initialize)."""
    from django.db import connection, transaction

    from gateway.models import Server

    runs = []

    def count_in_a_transaction():
        runs.append(1)
        with transaction.atomic():
            return Server.objects.select_for_update().filter(pk=server.pk).count()

    def backend_pid():
        connection.ensure_connection()
        if connection.vendor != "postgresql":
            connection.connection.close()  # SQLite has no server to end it: the driver's connection, under Django
            return None
        with connection.connection.cursor() as cursor:
            return cursor.execute("SELECT pg_backend_pid()").fetchone()[0]

    pids = await asyncio.to_thread(_on_every_database_thread, backend_pid)
    if connection.vendor == "postgresql":  # ended by the server, as a restart or pg_terminate_backend does
        import psycopg

        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    results = await asyncio.to_thread(_on_every_database_thread,
                                      lambda: dbthreads._on_a_sound_connection(count_in_a_transaction, (), {}))
    assert results == [1] * len(results)


@pytest.mark.django_db(transaction=True)
async def test_an_error_on_a_live_connection_is_not_retried_and_the_task_ran_once(server):
    from django.db import DatabaseError, connection

    runs = []

    def bad_statement():
        runs.append(1)
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_here")

    with pytest.raises(DatabaseError):
        await dbthreads.run(bad_statement)
    assert runs == [1]
    assert await dbthreads.run(lambda: connection.cursor().execute("SELECT 1") and True)


@pytest.mark.django_db(transaction=True)
async def test_the_gateways_database_hops_recover_from_lost_connections(server, grant_that_may):
    """Authorisation, tools/list filtering, the catalogue and held calls use the database threads too (asgiref's
    shared thread never checks its connection)."""
    from django.db import connection

    from gateway.protocol import holding, hops, tools_list

    def kill_connection():
        connection.ensure_connection()
        connection.connection.close()

    await hops.authorise("files", grant_that_may.token)
    await asyncio.to_thread(_on_every_database_thread, kill_connection)
    loaded, grant_id = await hops.authorise("files", grant_that_may.token)
    assert loaded.slug == "files" and grant_id == grant_that_may.grant.pk
    assert await tools_list.filter_tools(loaded, grant_that_may.token, [], True, False) == []
    assert holding._read_state.__wrapped__ is holding._state
