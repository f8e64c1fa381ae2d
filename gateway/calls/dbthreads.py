"""Database work of the tools/call hot path, off the event loop.

A pool of threads (each keeps its own Django connection; one thread for SQLite, see DB_THREADS) runs the
synchronous decision and outcome steps. asgiref's `sync_to_async` does the same with more bookkeeping per hop
than the gateway's whole policy evaluation; the hot path needs none of it (no thread-sensitive code, no request
signals).

Outcomes are written in batches: every outcome waiting when a write starts goes in the next write, one thread
hop and one commit for all of them. At concurrency 1 that is one outcome per write, as before; under load the
commits are shared. Each caller still waits until its own outcome is committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

log = logging.getLogger("portcullis.db")

# PostgreSQL: a few threads, so one call's round trips and commit do not queue the others behind them.
# SQLite: one. Its writers take one lock, and a second connection of the same process waiting for it sleeps in
# SQLite's busy handler (1, 2, 5, 10 … ms), which under load cost more than queueing in one thread.
DB_THREADS = {"postgresql": 4, "sqlite": 1}
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        from django.db import connection

        _POOL = ThreadPoolExecutor(max_workers=DB_THREADS.get(connection.vendor, 4),
                                   thread_name_prefix="portcullis-db")
    return _POOL

T = TypeVar("T")


async def run(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """func(*args, **kwargs) on a database thread; the caller's context variables go with it."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(_pool(), functools.partial(context.run, _on_a_sound_connection, func, args,
                                                                 kwargs))


def hop(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """`func` as a coroutine function whose every call runs on a database thread (see `run`)."""

    @functools.wraps(func)
    async def on_a_database_thread(*args: Any, **kwargs: Any) -> T:
        return await run(func, *args, **kwargs)

    return on_a_database_thread


def _on_a_sound_connection(func: Callable[..., T], args: tuple, kwargs: dict) -> T:
    """Run a task so that a lost database connection heals by itself (a restart, a failover, an idle timeout, a
    pooler restart, `pg_terminate_backend`): Django checks its connections between requests, and these threads
    serve none.

    - Before the task, a connection on which a database error occurred is closed; the task connects again.
    - When the task fails and a connection it used turns out to be dead, that connection is closed and the task
      runs once more on a fresh one. A statement sent on a dead connection never ran, and tasks are whole
      transactions, so running again is safe; when the database is still down, the second try fails too and the
      caller refuses with its reason. (If a connection died exactly while a COMMIT was in flight, the task may
      have committed once already: for an admission that means one extra audit row and one extra count, on the
      cautious side.) A live connection (a constraint, a lock timeout) is never retried.

    Tasks never leave a transaction open, so closing a connection between tasks is always safe."""
    from django.db import DatabaseError

    _close_errored_connections()
    started_on = _driver_connections()
    try:
        return func(*args, **kwargs)
    except DatabaseError:
        if not _close_dead_connections(started_on):
            raise
        log.warning("a database connection of %s was lost; reconnecting and running the task once more",
                    threading.current_thread().name)
    return func(*args, **kwargs)


def _close_errored_connections() -> None:
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred and conn.connection is not None:
            log.warning("closing the %s connection of %s after a database error; the next task reconnects",
                        conn.alias, threading.current_thread().name)
            conn.close()
            conn.errors_occurred = False


def _driver_connections() -> dict[str, object]:
    """Which driver connection each of this thread's Django connections holds (to tell, after a failure, whether
    Django replaced one)."""
    from django.db import connections

    return {conn.alias: conn.connection for conn in connections.all(initialized_only=True)}


def _close_dead_connections(started_on: dict[str, object] | None = None) -> bool:
    """Close this thread's connections that can no longer run a statement; whether there was one. A connection
    Django replaced during the task counts too: a transaction whose rollback failed on a lost connection is closed
    by Django, which then connects again to restore autocommit, so what is left looks healthy."""
    from django.db import connections

    dead = False
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block:  # a caller's transaction: not ours to close (tasks open their own)
            continue
        before = (started_on or {}).get(conn.alias)
        if before is not None and conn.connection is not None and conn.connection is not before:
            dead = True  # the one the task started on failed and was dropped; the new one is fine
        elif conn.connection is None:  # Django closed it itself when the failed transaction could not roll back
            dead = dead or conn.errors_occurred
        elif not _alive(conn):
            conn.close()
            dead = True
        conn.errors_occurred = False
    return dead


def _alive(conn) -> bool:
    if conn.vendor != "sqlite":
        return conn.is_usable()  # a `SELECT 1` on the driver's connection
    try:  # Django takes an SQLite connection for usable always; a closed handle is not
        conn.connection.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means this handle cannot run the task
        return False
    return True


class Batch(Generic[T]):
    """Items applied together by `apply_all(items)` (in one transaction), or one by one by `apply_one` when the
    whole batch fails, so one bad item cannot lose the others. An item is applied even if the task that
    submitted it is cancelled while waiting: an audit outcome is never dropped. `runner` runs each write (`run`
    here; loop_database.run runs it on the event loop's own connection when it can)."""

    def __init__(self, apply_one: Callable[[T], None], apply_all: Callable[[list[T]], None],
                 runner: Callable[..., Awaitable[None]] | None = None) -> None:
        self._apply_one, self._apply_all = apply_one, apply_all
        self._run = runner or run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[T, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def submit(self, item: T) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests, commands): nothing of the old one can be awaited
            self._loop, self._waiting, self._writer = loop, [], None
        done = loop.create_future()
        self._waiting.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write(), name="portcullis:outcomes")
        await asyncio.shield(done)

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            items = [item for item, _ in batch]
            try:
                if len(items) == 1:
                    await self._run(self._apply_one, items[0])
                else:
                    await self._run(self._apply_all, items)
            except Exception:
                if len(items) == 1:
                    _fail(batch[0][1])
                    continue
                log.warning("writing %d outcomes together failed; writing them one by one", len(items))
                for item, done in batch:
                    try:
                        await self._run(self._apply_one, item)
                    except Exception:
                        _fail(done)
                    else:
                        _succeed(done)
                continue
            for _, done in batch:
                _succeed(done)


def _succeed(done: asyncio.Future) -> None:
    if not done.done():
        done.set_result(None)


def _fail(done: asyncio.Future) -> None:
    if not done.done():
        done.set_exception(RuntimeError("the call's outcome could not be written to the audit log; see the log"))
        log.exception("writing a call's outcome failed")


def close_connections() -> None:
    """Close the database threads' own connections and the pool (the test run drops its database after this; a
    connection left open would keep the database in use)."""
    global _POOL
    pool, _POOL = _POOL, None
    if pool is None:
        return
    from django.db import connections

    workers = pool._max_workers  # noqa: SLF001 - each task below must land on its own thread
    barrier = threading.Barrier(workers)

    def close() -> None:
        barrier.wait(timeout=10)
        connections.close_all()

    for future in [pool.submit(close) for _ in range(workers)]:
        future.result(timeout=15)
    pool.shutdown()
