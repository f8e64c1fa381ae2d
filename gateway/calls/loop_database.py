"""The hot path's database work on the event loop itself, when the database is an SQLite file.

A tools/call's admission and its settlement are a few statements of a few tens of microseconds each on SQLite.
Sending them to a database thread (dbthreads.py) cost more than running them: two thread hops per call, and the
loop and that thread taking the interpreter lock from each other, so one process did less than a core's worth of
work under load (docs/ARCHITECTURE.md, "Performance"). Here the loop thread has a connection of its own and runs
such a task directly, as long as it never has to wait:

- Its busy timeout is 0: a statement that finds the write lock taken (the dashboard, a command, another process)
  raises prepared.NeedsThread at once instead of sleeping in SQLite's busy handler with the loop stopped.
- A step that needs the ORM (a cache to fill, an approval, a dispatcher, a draft in shadow, the rare
  last-used refresh) calls prepared.needs_thread() first.
- Either way nothing was committed yet (prepared.LoopTask.wrote), and the task runs again, whole, on a database thread,
  where it may wait. A task that had committed something and then needed a thread is a bug; it is logged and
  raised, never run twice.
- Its commits never checkpoint the write-ahead log (a checkpoint writes the database file and syncs it): every
  CHECKPOINT_EVERY commits one passive checkpoint runs on a database thread instead.

On PostgreSQL, run() hands the task to loop_postgres.py (the loop's own PostgreSQL connections). An in-memory
or non-WAL SQLite database keeps using the threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import SynchronousOnlyOperation

from gateway.calls import dbthreads, loop_postgres, prepared

log = logging.getLogger("portcullis.db")

T = TypeVar("T")
CHECKPOINT_EVERY = 200  # commits on the loop's connection between two passive checkpoints


class _Connection:
    """One event-loop thread's own SQLite connection (a Django wrapper, opened on a database thread)."""

    def __init__(self, wrapper) -> None:
        self.wrapper = wrapper
        self.commits = 0
        self.checkpointing: asyncio.Task | None = None
        self.closed = False


_local = threading.local()  # .connection: this thread's _Connection; .unsuitable: not an SQLite file in WAL mode
_all: list[_Connection] = []
_all_lock = threading.Lock()


async def run(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """func(*args, **kwargs) on this loop's own connection when it can finish there without waiting, else on a
    database thread (dbthreads.run). Exceptions of func are raised as they are."""
    if _postgres():
        return await loop_postgres.run(func, *args, **kwargs)
    own = getattr(_local, "connection", None)
    if own is None or own.closed:
        if getattr(_local, "unsuitable", False):
            return await dbthreads.run(func, *args, **kwargs)
        try:
            own = await _open()
        except Exception:  # noqa: BLE001 - the database may be down: on a thread the task meets that and refuses
            log.warning("the event loop's SQLite connection could not be opened; using a database thread",
                        exc_info=True)
            own = None
        if own is None:
            return await dbthreads.run(func, *args, **kwargs)
    task = prepared.LoopTask(own.wrapper)
    try:
        with prepared.use(task):
            result = func(*args, **kwargs)
    except (prepared.NeedsThread, SynchronousOnlyOperation) as exc:
        if task.wrote:
            log.error("a hot-path task needed a database thread after it had committed on the event loop's "
                      "connection; it was not run again: %s", func.__qualname__)
            raise RuntimeError("the gateway could not finish this call's database work; see its log") from exc
    else:
        if task.wrote:
            _committed(own)
        return result
    finally:
        if own.wrapper.errors_occurred:
            _close(own)
    return await dbthreads.run(func, *args, **kwargs)


@functools.cache
def _postgres() -> bool:
    from django.db import DEFAULT_DB_ALIAS, connections

    return connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


async def _open() -> _Connection | None:
    """This thread's connection, opened on a database thread (Django opens none inside an event loop); None when
    the database is not an SQLite file in WAL mode."""
    wrapper = await dbthreads.run(_new_wrapper)
    if wrapper is None:
        _local.unsuitable = True
        return None
    own = getattr(_local, "connection", None)
    if own is not None and not own.closed:  # another task of this thread opened one meanwhile
        _close(_Connection(wrapper))
        return own
    own = _local.connection = _Connection(wrapper)
    with _all_lock:
        _all.append(own)
    return own


def _new_wrapper():
    from django.db import DEFAULT_DB_ALIAS, connections

    if connections[DEFAULT_DB_ALIAS].vendor != "sqlite":
        return None
    wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
    if wrapper.is_in_memory_db():
        return None
    wrapper.ensure_connection()
    raw = wrapper.connection
    if raw.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        wrapper.close()
        return None
    raw.execute("PRAGMA busy_timeout = 0")  # never wait on the loop: NeedsThread instead
    raw.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run on a database thread (_checkpoint)
    # Its statements' scratch space (the statement journal of a transaction's second write) stays in memory: on
    # disk it was a temporary file created and deleted on about every fourth call (ten system calls each).
    raw.execute("PRAGMA temp_store = MEMORY")
    return wrapper


def _close(own: _Connection) -> None:
    """Close a loop connection; the thread's next call opens a new one. After a database error on it too: a
    broken handle must not fail every call after it."""
    own.closed = True
    with _all_lock:
        if own in _all:
            _all.remove(own)
    raw, own.wrapper.connection = own.wrapper.connection, None
    if raw is not None:
        raw.close()


def _committed(own: _Connection) -> None:
    own.commits += 1
    if own.commits < CHECKPOINT_EVERY or (own.checkpointing is not None and not own.checkpointing.done()):
        return
    own.commits = 0
    own.checkpointing = asyncio.get_running_loop().create_task(_checkpoint(), name="portcullis:wal-checkpoint")


async def _checkpoint() -> None:
    try:
        await dbthreads.run(_passive_checkpoint)
    except Exception:  # noqa: BLE001 - the next one tries again; the log grows meanwhile, nothing is lost
        log.warning("checkpointing the SQLite write-ahead log failed; trying again later", exc_info=True)


def _passive_checkpoint() -> None:
    """Copy what the log holds into the database file, without taking the write lock or waiting for readers."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")


def close_all() -> None:
    """Close every thread's loop connection (the test run removes its database after this). Not while a task of
    theirs runs: called at shutdown, with the loops stopped."""
    with _all_lock:
        closing = list(_all)
    for own in closing:
        _close(own)
    _local.__dict__.clear()
    loop_postgres.close_all()
