"""What the tests of the event loop's own connections share (test_loop_database.py for an SQLite file,
test_loop_postgres.py for PostgreSQL, test_loop_tasks.py for both): a server with a counted tool, the hops to a
database thread counted, and one call admitted and settled as the endpoint does it."""

from __future__ import annotations

from django.utils import timezone

from gateway import calls, policies
from gateway.calls import dbthreads, loop_database, loop_postgres
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import Server

ARGUMENTS = {"text": "hello"}


def echo_server() -> tuple[Server, str]:
    """A server with one tool, `echo`, counted on every call (max 1000 a day), and a grant's token for it."""
    server = Server.objects.create(slug="echo", name="Echo", transport=Server.Transport.STDIO, command=["echo"])
    sync_tools(server, [{"name": "echo", "inputSchema": {"type": "object"}}], timezone.now())
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"echo": {"limits": [
        {"counter": "echo", "window": "day", "max": 1000, "scope": "grant"}]}}}, actor="test")
    return server, create_grant("loop-agent", [server], None).token


class Hops:
    """Counts the tasks sent to a database thread (and, with `refuse`, fails the test if one is not the opening of
    a PostgreSQL loop connection, which is always done on a thread)."""

    def __init__(self, monkeypatch, refuse: bool = False) -> None:
        self.tasks: list[str] = []
        real = dbthreads.run

        async def counted(func, /, *args, **kwargs):
            self.tasks.append(getattr(func, "__qualname__", repr(func)))
            assert not refuse or func is loop_postgres._connect, f"{func} was sent to a database thread"
            return await real(func, *args, **kwargs)

        monkeypatch.setattr(dbthreads, "run", counted)


async def admit_and_settle(server, token) -> int:
    """One call admitted and settled ok, as the endpoint runs them; its audit row's id."""
    now = timezone.now()
    granted = await loop_database.run(calls.admit, token, server, "echo", ARGUMENTS, now)
    assert granted.forward, granted.message
    await loop_database.run(calls.settle, granted, outcome="ok", latency_ms=1.0, result_size=2, error="", now=now)
    return granted.call_id
