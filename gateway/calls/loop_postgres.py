"""The hot path's database work on the event loop itself, when the database is PostgreSQL.

On a database thread (dbthreads.py) a call's admission and its settlement cost two thread hops, and the loop and
that thread taking the interpreter lock from each other around every driver call: ~23 futex calls per call
(docs/ARCHITECTURE.md, "Performance"). Here each event loop has a few PostgreSQL connections of its own, and a task
(admission.py's synchronous code, written once for every database) runs in a greenlet on the loop's thread. The
connections are psycopg's ordinary ones, whose waits for the socket switch to the loop instead of blocking: the
loop goes on with other calls and switches back when the socket is ready. prepared.py's statements run unchanged.

- A task holds one connection from its start to its end (its transaction is that connection's). Up to POOL_SIZE
  tasks run at once; the others wait for a connection to be free. Connections are opened on a database thread.
- Each connection writes its own audit hash chain (audit_chain.py): a chain has one writer, whose rows are written
  one after another.
- A step that needs the ORM calls prepared.needs_thread() (Django refuses the ORM inside an event loop anyway), and
  a statement on a connection found lost (a restart, a failover, `pg_terminate_backend`) raises prepared.NeedsThread
  too: as on SQLite (loop_database.py), the task runs again, whole, on a database thread, provided nothing was
  committed yet. A lost connection is closed; a later task opens a new one.
- Cancelling the caller does not stop a task midway (whether an audit row or a count was committed would be
  unknown): the task finishes, as it would on a thread, its connection goes back to the pool, and then the caller
  is cancelled.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import select
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import greenlet
import psycopg
from django.core.exceptions import SynchronousOnlyOperation

from gateway.calls import dbthreads, prepared

log = logging.getLogger("portcullis.db")

T = TypeVar("T")
POOL_SIZE = 4  # as many as the database threads (dbthreads.DB_THREADS): a call's round trips never queue the others
_NONE, _READ, _WRITE = 0, 1, 2  # psycopg.waiting's READY_NONE, and Wait.R / Wait.W and READY_R / READY_W
CHECK_EVERY_S = 1.0


class LoopConnection(psycopg.Connection):
    """psycopg's connection, whose waits for the socket switch from the task's greenlet to the event loop.

    Set up (and closed) on an ordinary thread, where it waits as psycopg's own does (`cooperative` False)."""

    cooperative = False
    poller: select.poll | None = None
    polled = -1  # the descriptor `poller` watches

    def wait(self, gen, interval=0.1, timeout=None):
        if not self.cooperative:
            return super().wait(gen, interval=interval, timeout=timeout)
        loop_side = greenlet.getcurrent().parent
        try:
            events = next(gen)
            while True:
                # libpq closes the socket of a connection it found lost: PQsocket says -1 then, and this raises
                # "the connection is lost" (a closed descriptor would leave the loop's watch without a word).
                fileno = self.pgconn.socket
                if events == _READ and (ready := self._ready_now(fileno)):
                    events = gen.send(ready)
                else:
                    events = gen.send(loop_side.switch(events))
        except StopIteration as done:
            return done.value

    def _ready_now(self, fileno: int) -> int:
        """READY_R when the socket can be read at once (the answer is there, or the server has closed or reset the
        connection), else 0, without waiting. The answer that is already there needs no trip through the loop;
        and an error on a watched socket the event loop (uvloop) takes for its own, never calling the reader
        back, so a server that ended the session (an administrator's command, a restart) must be seen here, or
        the task would wait for ever."""
        if self.polled != fileno:
            self.poller, self.polled = select.poll(), fileno
            self.poller.register(fileno, select.POLLIN)
        return _READ if self.poller.poll(0) else 0


class _Done:
    """A task finished on a connection's greenlet: its result, or what it raised."""

    __slots__ = ("ok", "value")

    def __init__(self, ok: bool, value: object) -> None:
        self.ok, self.value = ok, value


def _work(job: tuple) -> None:
    """A connection's greenlet: runs its tasks one after another, each in its caller's context. (Made once per
    connection: a greenlet costs a stack of its own.)"""
    while True:
        task, context, func, args, kwargs = job
        try:
            done = _Done(True, context.run(_call, task, func, args, kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which raises it
            done = _Done(False, exc)
        job = greenlet.getcurrent().parent.switch(done)


def _call(task: prepared.LoopTask, func: Callable, args: tuple, kwargs: dict):
    with prepared.use(task):
        return func(*args, **kwargs)


class _Connection:
    """One of an event loop's own PostgreSQL connections, and the greenlet its tasks run in."""

    def __init__(self, wrapper) -> None:
        self.wrapper = wrapper  # Django's wrapper around a LoopConnection: its operations, its error mapping
        self.head = None  # this connection's audit chain head (audit_chain.py)
        self.worker: greenlet.greenlet | None = None
        self.waiting: asyncio.Future | None = None  # readable: the task's wait for the server's answer

    @property
    def lost(self) -> bool:
        raw = self.wrapper.connection
        return raw is None or raw.broken or raw.closed

    def lost_by(self, exc: BaseException) -> bool:
        """Whether the statement that raised `exc` failed because the connection is gone: psycopg found it broken,
        or the server ended the session (SQLSTATE class 08, or 57P: an administrator's command, a shutdown, a
        crash, an idle timeout), which it says just before it closes the socket."""
        if self.lost:
            return True
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        return (getattr(cause, "sqlstate", None) or "").startswith(("08", "57P"))

    def readable(self) -> None:
        waiting = self.waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(_READ)

    def start(self, job: tuple):
        """Run a task on this connection's greenlet until it first waits (psycopg's Wait bits) or is done."""
        if self.worker is None or self.worker.dead:
            self.worker = greenlet.greenlet(_work, parent=greenlet.getcurrent())
        return self.worker.switch(job)


class _Pool:
    """One event loop's connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: list[_Connection] = []
        self.open: list[_Connection] = []
        self.free = asyncio.Semaphore(POOL_SIZE)

    async def take(self) -> _Connection:
        await self.free.acquire()
        if self.idle:
            return self.idle.pop()
        try:
            own = await dbthreads.run(_connect)
        except BaseException:
            self.free.release()
            raise
        self.open.append(own)
        return own

    def give_back(self, own: _Connection) -> None:
        """Back to the pool when it is fit for the next task (connected, no error met, no transaction left open),
        else closed."""
        try:
            if own.lost or own.wrapper.errors_occurred or own.wrapper.connection.info.transaction_status != _IDLE:
                self.close(own)
            else:
                self.idle.append(own)
        finally:
            self.free.release()

    def close(self, own: _Connection) -> None:
        if own in self.open:
            self.open.remove(own)
        _finish(own)

    def close_all(self) -> None:
        for own in list(self.open):
            self.close(own)
        self.idle.clear()


_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE
_local = threading.local()  # .pool: this thread's event loop's _Pool
_pools: list[_Pool] = []
_pools_lock = threading.Lock()


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = getattr(_local, "pool", None)
    if pool is None or pool.loop is not loop:
        if pool is not None:  # the thread's previous loop ended (tests, commands): its connections with it
            _forget(pool)
        pool = _local.pool = _Pool(loop)
        with _pools_lock:
            _pools.append(pool)
    return pool


def _forget(pool: _Pool) -> None:
    pool.close_all()
    with _pools_lock:
        if pool in _pools:
            _pools.remove(pool)


def _connect() -> _Connection:
    """A connection as Django opens one (its settings, time zone, role and type adapters), on a database thread."""
    from django.db import DEFAULT_DB_ALIAS, connections

    wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
    raw = LoopConnection.connect(**wrapper.get_connection_params())
    try:
        options = wrapper.settings_dict["OPTIONS"]
        if "isolation_level" in options:
            raw.isolation_level = psycopg.IsolationLevel(options["isolation_level"])
        raw.autocommit = True  # the hot path's transactions say BEGIN (prepared.transaction)
        wrapper.connection = raw
        wrapper._configure_connection(raw)  # noqa: SLF001 - Django's own set-up: the time zone, the role
    except BaseException:
        raw.close()
        raise
    raw.cooperative = True
    return _Connection(wrapper)


def _finish(own: _Connection) -> None:
    """Close a connection (it never waits: its loop may be gone)."""
    raw, own.wrapper.connection = own.wrapper.connection, None
    try:
        if raw is not None:
            raw.close()
    except Exception:  # noqa: BLE001 - closing what may already be lost
        log.debug("closing a loop connection failed", exc_info=True)


async def run(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """func(*args, **kwargs) on one of this loop's PostgreSQL connections, else (a step that needs the ORM, a lost
    connection, no connection to be had) on a database thread. Exceptions of func are raised as they are."""
    pool = _pool()
    try:
        own = await pool.take()
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the database may be down: on a thread the task meets that and refuses
        log.warning("the event loop could not open a PostgreSQL connection; using a database thread", exc_info=True)
        return await dbthreads.run(func, *args, **kwargs)
    task = prepared.LoopTask(own.wrapper, own)
    outcome = await _drive(pool, own, (task, contextvars.copy_context(), func, args, kwargs))
    if outcome.ok:
        return outcome.value
    if isinstance(outcome.value, prepared.NeedsThread | SynchronousOnlyOperation):
        if task.wrote:
            log.error("a hot-path task needed a database thread after it had committed on the event loop's "
                      "connection; it was not run again: %s", func.__qualname__)
            raise RuntimeError("the gateway could not finish this call's database work; see its log") \
                from outcome.value
        return await dbthreads.run(func, *args, **kwargs)
    raise outcome.value


async def _drive(pool: _Pool, own: _Connection, job: tuple) -> _Done:
    """Run the task on the connection's greenlet, serving its waits for the socket, to the end; then give the
    connection back (and be cancelled, if the caller was meanwhile)."""
    loop, cancelled, reading = pool.loop, None, None
    try:
        asked = own.start(job)
        while not isinstance(asked, _Done):
            try:
                if reading is None and asked & _READ:
                    loop.add_reader(fileno := own.wrapper.connection.pgconn.socket, own.readable)
                    reading = fileno
                ready = await _ready(loop, own, asked)
            except asyncio.CancelledError as exc:  # finish first (see the module's docstring), then be cancelled
                cancelled = exc
                continue
            except Exception as exc:  # noqa: BLE001 - the socket cannot be watched: raised where the task waits
                asked = own.worker.throw(exc)
                continue
            asked = own.worker.switch(ready)
    finally:
        if reading is not None:
            loop.remove_reader(reading)
        own.waiting = None
        pool.give_back(own)
        if cancelled is not None:
            raise cancelled
    return asked


async def _ready(loop: asyncio.AbstractEventLoop, own: _Connection, events: int) -> int:
    """Wait until the socket is ready as asked; what it is ready for (psycopg's READY_R / READY_W bits), or
    nothing after CHECK_EVERY_S, as psycopg's own wait does, so that the task looks at its connection again. The
    reader stays registered for the whole task (one registration, not one per statement)."""
    ready = own.waiting = loop.create_future()
    check = loop.call_later(CHECK_EVERY_S, _set, ready, _NONE)
    fileno = own.wrapper.connection.pgconn.socket if events & _WRITE else None
    if fileno is not None:
        loop.add_writer(fileno, _set, ready, _WRITE)
    try:
        return await ready
    finally:
        check.cancel()
        if fileno is not None:
            loop.remove_writer(fileno)


def _set(ready: asyncio.Future, event: int) -> None:
    if not ready.done():
        ready.set_result(event)


def close_all() -> None:
    """Close every loop's connections (the test run drops its database after this). Not while a task of theirs
    runs: called at shutdown, with the loops stopped."""
    with _pools_lock:
        pools = list(_pools)
    for pool in pools:
        _forget(pool)
    _local.__dict__.clear()
