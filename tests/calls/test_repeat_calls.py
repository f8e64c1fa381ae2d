"""A repeat call (gateway/calls/repeat_calls.py): on PostgreSQL a call by the same token to the same tool is decided
on the facts last read for it, and its counter and audit row are written only if the database still holds exactly
those facts, in the same statement. Whatever an operator changed in between takes effect on the very next call.

The changes are cases as data and run on both databases (on SQLite every call reads its facts; the outcome must be
the same); the count of statements is PostgreSQL's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from gateway import calls, grants, policies, shadows, tokens
from gateway.calls import audit_chain, postgres_statements, repeat_calls
from gateway.catalogue import actions
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import Call, Counter, Grant, Server, ShadowDivergence, Tool
from gateway.policy.dispatch import Shape
from tests.calls.racing import count_in_threads

pytestmark = [pytest.mark.django_db(transaction=True)]

ECHO = {"name": "echo", "inputSchema": {"type": "object"}}
COUNTED = {"version": "1", "default": "deny", "tools": {"echo": {"limits": [
    {"counter": "echo", "window": "day", "max": 4, "scope": "grant"}]}}}
UNCOUNTED = {"version": "1", "default": "deny", "tools": {"echo": {}}}
# Two counters on every call: the tool's own (echo, 4 a day) and the server's for every tool (all, 6 a day).
TWO_COUNTERS = {**COUNTED, "all_tools": {"limits": [{"counter": "all", "window": "day", "max": 6, "scope": "grant"}]}}


@dataclass
class Live:
    server: Server
    grant: Grant
    token: str
    name: str  # the tool the policy decides: echo, or the action hi of echo declared a dispatcher
    document: dict  # the server's policy


def live_with(document: dict, dispatcher: bool = False) -> Live:
    """The echo server; with `dispatcher`, echo is a dispatcher whose action is named by its text ({"text": "hi"}
    is a call of the action hi), and the policy's rules for echo are the action's."""
    server = Server.objects.create(slug="echo", name="Echo", transport=Server.Transport.STDIO, command=["echo"])
    sync_tools(server, [ECHO], timezone.now())
    name = "echo"
    if dispatcher:
        tool = Tool.objects.get(server=server, name="echo")
        actions.declare(tool, Shape(action="/text"), actor="test")
        tool.refresh_from_db()
        actions.import_actions(tool, [{"name": "hi", "inputSchema": {"type": "object"}}])
        name = "hi"
    policies.apply(server, named(document, name), actor="test")
    new = create_grant("repeat-agent", [server], None)
    return Live(server, Grant.objects.get(pk=new.grant.pk), new.token, name, document)


def named(document: dict, name: str) -> dict:
    tools = document.get("tools", {})
    return {**document, "tools": {name if tool == "echo" else tool: rule for tool, rule in tools.items()}}


@pytest.fixture(autouse=True)
def fresh():
    """No facts kept from another test, and this thread's audit chain starts with the table (it is emptied
    between tests)."""
    repeat_calls.forget_all()
    audit_chain._local.head = None
    audit_chain._heads.clear()
    yield
    repeat_calls.forget_all()
    audit_chain._local.head = None
    audit_chain._heads.clear()


def call(live: Live, server: Server | None = None, current_server: bool = False, arguments: dict | None = None):
    """One call admitted and, when forwarded, settled ok, as the endpoint runs them."""
    now = timezone.now()
    admitted = calls.admit(live.token, server or live.server, "echo", arguments or {"text": "hi"}, now,
                           current_server=current_server)
    if admitted.forward:
        calls.settle(admitted, outcome="ok", latency_ms=1.0, result_size=2, error="", now=now)
    return admitted


def warmed(live: Live) -> None:
    """Three calls: the first refreshes the grant's last_used_at, the second reads facts that need nothing done,
    the third is decided on them. On PostgreSQL the next call is a repeat call."""
    assert all(call(live).forward for _ in range(3))
    if connection.vendor == "postgresql":
        known = repeat_calls.known(tokens.prefix_of(live.token), live.server.pk, "echo")
        assert known is not None and known.row[6] == 0  # last_used_at not due
        if live.name != "echo":
            dispatcher = Tool.objects.get(server=live.server, name="echo")
            assert repeat_calls.known_action([live.server.pk, live.name, dispatcher.pk]) is not None


def verified() -> str:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", "--no-archive", stdout=out, stderr=err)
    except SystemExit as exc:
        raise AssertionError(err.getvalue()) from exc
    return out.getvalue()


class Statements:
    """Counts the statements the hot path sends PostgreSQL (gateway/calls/postgres_statements.py)."""

    def __init__(self, monkeypatch) -> None:
        self.sent: list[str] = []
        real = postgres_statements.run

        def counted(conn, sql, params):
            self.sent.append(sql)
            return real(conn, sql, params)

        monkeypatch.setattr(postgres_statements, "run", counted)

    def during(self, action):
        self.sent.clear()
        result = action()
        return result, list(self.sent)


def test_a_repeat_call_is_decided_counted_and_audited_in_one_statement(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("round trips to the database are PostgreSQL's; on SQLite the facts are read in-process "
                    "(CI runs the suite on PostgreSQL: .ci/run)")
    live = live_with(COUNTED)
    statements = Statements(monkeypatch)
    first, sent = statements.during(lambda: call(live))
    assert first.forward and len(sent) == 3, sent  # the facts read, the counter and the row, the settlement
    # The first call refreshed the grant's last_used_at (its facts said it was due): the next reads again.
    second, sent = statements.during(lambda: call(live))
    assert second.forward and len(sent) == 3, sent
    repeat, sent = statements.during(lambda: calls.admit(live.token, live.server, "echo", {"text": "again"},
                                                         timezone.now()))
    assert repeat.forward and len(sent) == 1, sent
    row = Call.objects.get(pk=repeat.call_id)
    assert (row.decision, row.outcome, len(row.counters), row.arguments, row.grant_name) == (
        "allow", "pending", 1, {"text": "again"}, "repeat-agent")
    assert Counter.objects.get().n == 3
    # Without a counter it is one statement as well.
    policies.apply(live.server, UNCOUNTED, actor="test")
    call(live)
    uncounted, sent = statements.during(lambda: calls.admit(live.token, live.server, "echo", {}, timezone.now()))
    assert uncounted.forward and len(sent) == 1 and Call.objects.get(pk=uncounted.call_id).counters == []
    verified()


def test_a_dispatchers_repeat_call_reads_its_action_again_in_the_same_statement(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("round trips to the database are PostgreSQL's (CI runs the suite on it: .ci/run)")
    live = live_with(COUNTED, dispatcher=True)
    warmed(live)
    statements = Statements(monkeypatch)
    repeat, sent = statements.during(lambda: calls.admit(live.token, live.server, "echo", {"text": "hi"},
                                                         timezone.now()))
    assert repeat.forward and len(sent) == 1, sent
    row = Call.objects.get(pk=repeat.call_id)
    assert (row.tool_name, row.via, row.decision, len(row.counters)) == ("hi", "echo", "allow", 1)
    assert Counter.objects.get().n == 4
    verified()


def test_a_repeat_call_past_its_limit_is_refused_after_one_statement_that_confirmed_its_facts(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("round trips to the database are PostgreSQL's (CI runs the suite on it: .ci/run)")
    live = live_with(COUNTED)
    warmed(live)
    assert call(live).forward  # the fourth of four
    statements = Statements(monkeypatch)
    refused, sent = statements.during(lambda: calls.admit(live.token, live.server, "echo", {"text": "hi"},
                                                          timezone.now()))
    assert not refused.forward and refused.refusal == "limit" and len(sent) == 2, sent  # and the refusal's row
    row = Call.objects.get(pk=refused.call_id)
    assert (row.decision, row.refusal, row.outcome, row.rule) == ("deny", "limit", "refused", "/tools/echo/limits/0")
    assert row.counters == [Counter.objects.get().key] and "limit" in row.reason and Counter.objects.get().n == 4
    verified()


ONLY_HI = {"version": "1", "default": "deny", "tools": {"echo": {
    "arguments": {"properties": {"text": {"pattern": "^hi$"}}},
    "limits": [{"counter": "echo", "window": "day", "max": 4, "scope": "grant"}]}}}


@pytest.mark.parametrize("dispatcher", [False, True], ids=["tool", "dispatcher"])
def test_a_repeat_call_the_policy_refuses_is_audited_in_one_statement_and_a_new_policy_is_read(
        monkeypatch, dispatcher):
    live = live_with(ONLY_HI, dispatcher)
    warmed(live)
    statements = Statements(monkeypatch)
    # a dispatcher's action is named by the text: {"text": "hi", "extra": …} is the action hi, refused by its rule
    arguments = {"text": "hi", "mode": "x"} if dispatcher else {"text": "bye"}
    policies.apply(live.server, named({**ONLY_HI, "tools": {"echo": {**ONLY_HI["tools"]["echo"], "arguments": {
        "forbidden": ["mode"], "properties": {"text": {"pattern": "^hi$"}}}}}}, live.name), actor="test")
    call(live)  # read afresh: the new policy's facts are kept
    refused, sent = statements.during(lambda: call(live, arguments=arguments))
    assert not refused.forward and refused.refusal == "arguments" and "argument '" in refused.message
    if connection.vendor == "postgresql":
        assert len(sent) == 1, sent  # the refusal's row, written only where the facts are those decided on
    row = Call.objects.get(pk=refused.call_id)
    assert (row.decision, row.refusal, row.outcome, row.reason) == ("deny", "arguments", "refused", refused.message)
    assert row.arguments == arguments and row.counters == [] and Counter.objects.get().n == 4
    # The policy changed since: the same call is decided on the new one, not refused on the facts kept.
    policies.apply(live.server, named(UNCOUNTED, live.name), actor="test")
    assert call(live, arguments=arguments).forward
    verified()


def counted(counter: str = "echo") -> int | None:
    row = Counter.objects.filter(key__startswith=f"{counter}|").first()
    return None if row is None else row.n


def test_a_call_with_two_counters_is_counted_and_audited_in_one_statement(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("round trips to the database are PostgreSQL's (CI runs the suite on it: .ci/run)")
    live = live_with(TWO_COUNTERS)
    statements = Statements(monkeypatch)
    first, sent = statements.during(lambda: call(live))
    assert first.forward and len(sent) == 3, sent  # the facts read, both counters and the row, the settlement
    call(live)
    repeat, sent = statements.during(lambda: calls.admit(live.token, live.server, "echo", {}, timezone.now()))
    assert repeat.forward and len(sent) == 1, sent
    assert len(Call.objects.get(pk=repeat.call_id).counters) == 2 and (counted("all"), counted()) == (3, 3)
    verified()


@pytest.mark.parametrize("repeat", [False, True], ids=["read first", "repeat call"])
@pytest.mark.parametrize("full", ["all", "echo"], ids=["first counter full", "second counter full"])
def test_a_call_with_one_of_two_counters_full_is_refused_by_it_and_counts_on_neither(full, repeat):
    live = live_with(TWO_COUNTERS)
    warmed(live)  # all 3/6, echo 3/4
    Counter.objects.filter(key__startswith=f"{full}|").update(n=6 if full == "all" else 4)
    if not repeat:
        repeat_calls.forget_all()
    refused = call(live)
    row = Call.objects.get(pk=refused.call_id)
    assert not refused.forward and (refused.refusal, row.refusal, row.outcome) == ("limit", "limit", "refused")
    assert f"rate limit {full} exceeded" in refused.message and row.counters == [
        Counter.objects.get(key__startswith=f"{full}|").key]
    assert row.rule == ("/all_tools/limits/0" if full == "all" else "/tools/echo/limits/0")
    assert (counted("all"), counted()) == ((6, 3) if full == "all" else (3, 4))  # nothing taken on the other
    verified()


def test_concurrent_calls_with_two_counters_admit_exactly_max():
    live = live_with({**TWO_COUNTERS, "tools": {"echo": {"limits": [
        {"counter": "echo", "window": "day", "max": 7, "scope": "grant"}]}}})
    admitted = count_in_threads(lambda: calls.admit(live.token, live.server, "echo", {}, timezone.now()).forward)
    assert admitted == 6 and (counted("all"), counted()) == (6, 6)  # all (6 a day) is the stricter
    assert Call.objects.filter(refusal="limit").count() == 24
    verified()


def _revoke(live: Live) -> None:
    grants.revoke(live.grant, timezone.now())


def _expire(live: Live) -> None:
    Grant.objects.filter(pk=live.grant.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def _uncover(live: Live) -> None:
    live.grant.servers.remove(live.server)


def _disable(live: Live) -> None:
    Server.objects.filter(pk=live.server.pk).update(enabled=False)


def _deny(live: Live) -> None:
    policies.apply(live.server, {"version": "1", "default": "deny", "tools": {}}, actor="test")


def _grant_rules(live: Live) -> None:
    rules = {"version": "1", "default": "deny", "tools": {live.name: {"action": "deny"}}}
    if "all_tools" in live.document:  # a grant's rules keep the server's limits for all tools
        rules["all_tools"] = live.document["all_tools"]
    policies.apply(live.server, rules, grant=live.grant, actor="test")


def _hold_action(live: Live) -> None:
    Tool.objects.filter(server=live.server, via__isnull=False).update(held_reason="waits for a person")


def _remove_action(live: Live) -> None:
    Tool.objects.filter(server=live.server, via__isnull=False).update(gone_at=timezone.now())


def _change_shape(live: Live) -> None:
    tool = Tool.objects.get(server=live.server, name="echo")
    actions.declare(tool, Shape(action="/action"), actor="test")


def _change_definition(live: Live) -> None:
    sync_tools(live.server, [{**ECHO, "description": "now it deletes things"}], timezone.now())


def _remove_tool(live: Live) -> None:
    sync_tools(live.server, [], timezone.now())


def _new_token_same_prefix(live: Live) -> None:
    # The grant's token replaced under the same prefix: the old token no longer matches the stored digest.
    other = create_grant("other", [live.server], None)
    digest = Grant.objects.get(pk=other.grant.pk).token_digest
    Grant.objects.filter(pk=other.grant.pk).delete()
    Grant.objects.filter(pk=live.grant.pk).update(token_digest=digest)


def _fill_counter(live: Live) -> None:
    Counter.objects.update(n=4)


def _shadow(live: Live) -> None:
    shadows.start(live.server, {"version": "1", "default": "deny", "tools": {}})


def _stale_last_used(live: Live) -> None:
    Grant.objects.filter(pk=live.grant.pk).update(last_used_at=timezone.now() - timedelta(days=2))


# (what an operator (or time) changed, what the very next call must get)
CHANGES = [
    (_revoke, ("auth", 401, "this grant has been revoked")),
    (_expire, ("auth", 401, "this grant has expired")),
    (_uncover, ("auth", 403, "this grant does not cover server 'echo'")),
    (_disable, ("auth", 403, "server 'echo' is disabled by an operator")),
    (_new_token_same_prefix, ("auth", 401, "unknown token")),
    (_deny, ("refused", "policy")),
    (_grant_rules, ("refused", "policy")),
    (_change_definition, ("refused", "review")),
    (_remove_tool, ("refused", "unknown_tool")),
    (_fill_counter, ("refused", "limit")),
    (_shadow, ("forwarded", "shadow")),
    (_stale_last_used, ("forwarded", "last used")),
]
# And where the tool is a dispatcher: its action's row is read again as well.
ACTION_CHANGES = [
    (_hold_action, ("refused", "unknown_tool")),
    (_remove_action, ("refused", "unknown_tool")),
    (_change_shape, ("refused", "dispatch")),
]
CASES = [(change, expected, False, COUNTED) for change, expected in CHANGES] + [
    (change, expected, True, COUNTED) for change, expected in CHANGES + ACTION_CHANGES] + [
    (change, expected, False, TWO_COUNTERS) for change, expected in CHANGES]


@pytest.mark.parametrize(("change", "expected", "dispatcher", "document"), CASES,
                         ids=[c.__name__.strip("_") + (" (dispatcher)" if d else "") + (
                             " (two counters)" if doc is TWO_COUNTERS else "") for c, _, d, doc in CASES])
def test_a_change_between_two_calls_takes_effect_on_the_very_next_call(change, expected, dispatcher, document):
    live = live_with(document, dispatcher)
    warmed(live)
    before = Call.objects.count()
    change(live)
    kind = expected[0]
    if kind == "auth":
        with pytest.raises(grants.AuthFailure) as failure:
            call(live)
        assert (failure.value.status, str(failure.value)) == expected[1:]
        assert Call.objects.count() == before  # no grant is known: nothing audited, nothing counted
        return
    admitted = call(live)
    row = Call.objects.get(pk=admitted.call_id)
    if kind == "refused":
        assert not admitted.forward and (admitted.refusal, row.refusal, row.outcome) == (expected[1],) * 2 + (
            "refused",)
        assert counted() == (4 if change is _fill_counter else 3)  # nothing counted for it
        if document is TWO_COUNTERS:
            assert counted("all") == (4 if change is _fill_counter else 3)  # nor on the other counter
    else:
        assert admitted.forward and row.outcome == "ok" and counted() == 4
        if change is _shadow:
            assert ShadowDivergence.objects.filter(call_id=admitted.call_id).exists()
        else:
            last_used = Grant.objects.get(pk=live.grant.pk).last_used_at
            assert last_used > timezone.now() - timedelta(minutes=1)
    verified()


def test_a_stale_copy_of_the_server_is_never_decided_on():
    live = live_with(COUNTED)
    old = Server.objects.get(pk=live.server.pk)
    assert all(call(live, old, current_server=True).forward for _ in range(3))
    Server.objects.get(pk=live.server.pk).save()  # changed: a new updated_at
    with pytest.raises(calls.StaleServer):
        call(live, old, current_server=True)
    assert call(live, Server.objects.get(pk=live.server.pk), current_server=True).forward
    assert Counter.objects.get().n == 4


def test_another_token_with_the_same_prefix_is_refused_and_the_grants_calls_go_on():
    live = live_with(COUNTED)
    warmed(live)
    forged = live.token[:-4] + ("AAAA" if not live.token.endswith("AAAA") else "BBBB")
    with pytest.raises(grants.AuthFailure) as failure:
        calls.admit(forged, live.server, "echo", {}, timezone.now())
    assert failure.value.status == 401
    assert call(live).forward and Counter.objects.get().n == 4
    assert Tool.objects.get().name == "echo"
    verified()


def test_a_full_counter_that_escalates_holds_the_repeat_call_for_a_person():
    live = live_with({"version": "1", "default": "deny", "tools": {"echo": {"limits": [
        {"counter": "echo", "window": "day", "max": 3, "scope": "grant", "on_exceed": "approve"}]}}})
    warmed(live)  # the counter is now full
    held = call(live)
    row = Call.objects.get(pk=held.call_id)
    assert not held.forward and held.held is not None
    assert (row.decision, row.outcome) == ("approve", "pending") and Counter.objects.get().n == 3
    verified()


def test_only_an_authenticated_call_of_a_tool_the_server_has_is_kept():
    live = live_with(COUNTED)
    warmed(live)
    refused = calls.admit(live.token, live.server, "no-such-tool", {}, timezone.now())
    assert not refused.forward and refused.refusal == "unknown_tool"
    forged = live.token[:-4] + ("AAAA" if not live.token.endswith("AAAA") else "BBBB")
    with pytest.raises(grants.AuthFailure):
        calls.admit(forged, live.server, "other-tool", {}, timezone.now())
    assert repeat_calls.known(tokens.prefix_of(live.token), live.server.pk, "no-such-tool") is None
    assert repeat_calls.known(tokens.prefix_of(live.token), live.server.pk, "other-tool") is None
