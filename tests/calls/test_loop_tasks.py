"""The event loop's own connections, whichever the database (an SQLite file: loop_database.py; PostgreSQL:
loop_postgres.py): once open, a call is admitted and settled on the loop's thread without a hop; a step that needs
the ORM sends the task to a thread before anything is written; a task that committed there and then needs a
database thread is refused and logged, never run twice."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.utils import timezone

from gateway import calls, policies
from gateway.calls import admission, loop_database, prepared
from gateway.catalogue import actions
from gateway.models import Call, Counter, Server, Tool
from gateway.policy.dispatch import Shape
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


def test_a_dispatchers_call_of_a_known_action_stays_on_the_loop_and_an_unknown_one_is_queued_from_a_thread(
        echo, monkeypatch):
    server, token = echo
    echo_tool = Tool.objects.get(server=server, name="echo")
    actions.declare(echo_tool, Shape(action="/text"), actor="test")
    echo_tool.refresh_from_db()
    actions.import_actions(echo_tool, [{"name": "hello", "inputSchema": {"type": "object"}}])
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"hello": {"limits": [
        {"counter": "hello", "window": "day", "max": 1000, "scope": "grant"}]}}}, actor="test")

    async def call(text: str):
        now = timezone.now()
        admitted = await loop_database.run(calls.admit, token, server, "echo", {"text": text}, now)
        if admitted.forward:
            await loop_database.run(calls.settle, admitted, outcome="ok", latency_ms=1.0, result_size=2, error="",
                                    now=now)
        return admitted

    async def scenario():
        assert (await call("hello")).forward  # opens the connection and fills the caches
        hops = Hops(monkeypatch)
        known = [await call("hello") for _ in range(3)]
        on_the_loop = list(hops.tasks)
        unknown = await call("goodbye")
        return known, on_the_loop, unknown, hops.tasks

    known, on_the_loop, unknown, tasks = asyncio.run(scenario())
    assert all(a.forward for a in known) and on_the_loop == []
    assert [Call.objects.get(pk=a.call_id).tool_name for a in known] == ["hello"] * 3
    assert not unknown.forward and unknown.refusal == "unknown_tool" and "queued" in unknown.message
    assert [t for t in tasks if "admit" in t] == ["admit"]  # the queueing went to a thread, before any write
    assert Tool.objects.filter(via=echo_tool, name="goodbye").exclude(held_reason="").exists()
    assert Call.objects.filter(tool_name="goodbye", refusal="unknown_tool").count() == 1  # written once
    assert Counter.objects.get().n == 4


def test_a_repeat_call_whose_facts_changed_is_decided_again_even_when_that_needs_a_thread(echo, monkeypatch):
    """PostgreSQL's repeat calls (calls/repeat_calls.py): the statement that found the facts changed wrote nothing,
    so the call decided again may still go to a thread (here: the new policy is read through the ORM)."""
    server, token = echo

    async def scenario():
        await admit_and_settle(server, token)
        await admit_and_settle(server, token)  # decided on the facts kept from the first call (PostgreSQL)
        await asyncio.to_thread(policies.apply, server, {"version": "1", "default": "deny", "tools": {"echo": {
            "limits": [{"counter": "echo", "window": "day", "max": 999, "scope": "grant"}]}}}, actor="test")
        hops = Hops(monkeypatch)
        third = await admit_and_settle(server, token)
        return third, hops.tasks

    third, tasks = asyncio.run(scenario())
    assert [t for t in tasks if "admit" in t] == ["admit"]  # the new policy was read on a thread
    assert Call.objects.get(pk=third).policy_version.number == 2 and Counter.objects.get().n == 3
    assert Call.objects.count() == 3  # nothing written twice
