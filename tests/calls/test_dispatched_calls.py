"""A dispatcher's calls are decided as calls of their actions (issue 14): the seed policy written for the flat
TrueNAS tools governs `truenas(category, action, params)` unchanged, and nothing a call could put in the action
argument (missing, non-string, nested, look-alike, unknown, in the wrong category) is ever passed on as a call of
the umbrella tool. Admission is driven directly here; tests/e2e/test_dispatcher.py runs the real simulator."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from gateway import calls, policies
from gateway.calls import dispatched
from gateway.catalogue import actions
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import Call, Server, Tool
from gateway.policy.dispatch import Shape
from tests.policy.policy_cases import SEED

ACTIONS = json.loads(actions.TRUENAS_ACTIONS.read_text())
UMBRELLA = {"name": "truenas", "description": "Run any TrueNAS action.",
            "inputSchema": {"properties": {"category": {"type": "string"}, "action": {"type": "string"},
                                           "params": {"type": "object"}}, "required": []}}


@pytest.fixture
def umbrella(db):
    server = Server.objects.create(slug="nas", name="NAS", transport=Server.Transport.STDIO,
                                   command=["python", "-m", "truenas_sim", "--umbrella"])
    sync_tools(server, [UMBRELLA], timezone.now())
    tool = Tool.objects.get(server=server, name="truenas")
    actions.declare(tool, Shape.from_json(tool.dispatch_suggested), actor="test")
    tool.refresh_from_db()
    actions.import_actions(tool, actions.truenas_action_list())
    policies.apply(server, SEED, actor="test")
    return server


@pytest.fixture
def token(umbrella):
    return create_grant("agent", [umbrella], None).token


def admit(server, token, arguments, name="truenas", **kw):
    return calls.admit(token, server, name, arguments, kw.pop("now", timezone.now()), **kw)


def backup(**extra):
    return {"category": "data_protection", "action": "cloud_backup_run", "params": {"id": 1}, **extra}


def last_row() -> Call:
    return Call.objects.order_by("-pk").first()


def test_the_tool_is_detected_as_a_dispatcher_and_its_278_actions_imported(umbrella):
    tool = Tool.objects.get(server=umbrella, name="truenas")
    assert tool.dispatch == {"action": "/action", "match": ["/category"], "params": "/params", "accept_new": False}
    assert Tool.objects.filter(via=tool).count() == len(ACTIONS["actions"]) == 278
    backup_tool = Tool.objects.get(server=umbrella, name="cloud_backup_run")
    assert backup_tool.match == {"/category": "data_protection"} and backup_tool.risk_category == "execute"
    assert Tool.objects.get(server=umbrella, name="dataset_delete").risk_category == "destructive"


def test_the_seed_policy_limits_the_action_through_the_umbrella(umbrella, token):
    now = timezone.now()
    admitted = [admit(umbrella, token, backup(), now=now) for _ in range(11)]
    assert [a.forward for a in admitted] == [True] * 10 + [False]
    assert admitted[-1].message.startswith("rate limit cloud_backup_run_rate exceeded: 10 per minute, retry in ")
    rows = list(Call.objects.order_by("pk"))
    assert {(r.tool_name, r.via) for r in rows} == {("cloud_backup_run", "truenas")}
    assert rows[0].rule == "/tools/cloud_backup_run" and rows[0].counters[0].startswith("cloud_backup_run_rate|")
    assert rows[-1].refusal == "limit"


def test_every_other_action_is_refused_with_a_reason(umbrella, token):
    refused = admit(umbrella, token, {"category": "storage", "action": "dataset_delete",
                                      "params": {"id": "tank/media", "confirm": True}})
    assert not refused.forward
    assert refused.message == "denied by policy: tool 'dataset_delete' is not allowed by this policy (default: deny)"
    assert (last_row().tool_name, last_row().via, last_row().refusal) == ("dataset_delete", "truenas", "policy")


@pytest.mark.parametrize("arguments, says", [
    ({"category": "data_protection", "params": {"id": 1}}, "argument /action of 'truenas' is required"),
    ({"action": "", "category": "data_protection"}, "argument /action of 'truenas' is required"),
    ({"action": ["cloud_backup_run"], "category": "data_protection"},
     "must be one action name as a string, not an array"),
    ({"action": {"name": "cloud_backup_run"}, "category": "data_protection"}, "not an object"),
    ({"action": 7, "category": "data_protection"}, "not a string"),
    ({"action": True, "category": "data_protection"}, "not a boolean"),
    ({"action": "cloud_backup_run ", "category": "data_protection"}, "is not an action name"),
    ({"action": "cloud_backup_run\u200b", "category": "data_protection"}, "is not an action name"),
    ({"action": "cloud_backup_r\u0443n", "category": "data_protection"}, "is not an action name"),  # Cyrillic у
    ({"action": "cloud_backup_run\u0000", "category": "data_protection"}, "is not an action name"),  # NUL
    ({"action": "cloud_backup_run", "category": ["data_protection"]},
     "argument /category of 'truenas' must be a string"),
    ({"action": "cloud_backup_run", "category": "data_protection", "params": [1]}, "must be an object"),
    ({"action": "cloud_backup_run", "category": "storage"}, "needs argument /category = 'data_protection'"),
    ({"action": "cloud_backup_run"}, "needs argument /category = 'data_protection' (the call's is missing)"),
    ("not an object", "needs its arguments as a JSON object"),
])
def test_a_call_that_names_no_usable_action_is_refused(umbrella, token, arguments, says):
    admission = admit(umbrella, token, arguments)
    assert not admission.forward and says in admission.message, admission.message
    assert last_row().refusal == "dispatch" and last_row().decision == "deny"
    assert not Tool.objects.filter(server=umbrella, name__startswith="cloud_backup_r", held_reason__gt="").exists()


def test_an_action_hidden_inside_params_is_an_argument_of_the_named_action(umbrella, token):
    policies.apply(umbrella, {**SEED, "tools": {**SEED["tools"], "pool_list": {}}}, actor="test")
    admission = admit(umbrella, token, {"category": "storage", "action": "pool_list",
                                        "params": {"action": "dataset_delete", "category": "storage"}})
    assert admission.forward and last_row().tool_name == "pool_list"  # decided (and forwarded) as pool_list
    admission = admit(umbrella, token, {"category": "storage", "action": "dataset_delete",
                                        "params": {"action": "pool_list"}})
    assert not admission.forward and last_row().tool_name == "dataset_delete"


def test_calling_an_action_by_its_own_name_is_an_unknown_tool_with_a_hint(umbrella, token):
    admission = admit(umbrella, token, {"id": 1}, name="cloud_backup_run")
    assert not admission.forward
    assert "'cloud_backup_run' is an action of the tool 'truenas': call 'truenas' with /action" in admission.message


def test_an_unknown_action_is_refused_and_queued_for_review(umbrella, token):
    unknown = {"category": "system", "action": "system_self_destruct", "params": {}}
    admission = admit(umbrella, token, unknown)
    assert not admission.forward and "queued for a person's review" in admission.message
    held = Tool.objects.get(server=umbrella, name="system_self_destruct")
    assert held.via.name == "truenas" and held.held_reason == dispatched.HELD_UNKNOWN
    again = admit(umbrella, token, unknown)
    assert not again.forward and "waits for a person's review" in again.message
    # A person accepts it: the policy decides from now on (the seed's default denies it).
    actions.accept(held, actor="alice")
    assert admit(umbrella, token, unknown).message.endswith("is not allowed by this policy (default: deny)")


def test_an_unknown_action_runs_only_where_the_server_accepts_new_ones_and_the_default_allows(umbrella, token):
    tool = Tool.objects.get(server=umbrella, name="truenas")
    policies.apply(umbrella, {"version": "1", "default": "allow"}, actor="test")
    assert not admit(umbrella, token, {"action": "brand_new_thing", "category": "x"}).forward  # not accepting
    actions.declare(tool, Shape("/action", ("/category",), "/params", accept_new=True), actor="test")
    admission = admit(umbrella, token, {"action": "another_new_thing", "category": "x"})
    assert admission.forward and Tool.objects.get(name="another_new_thing").held_reason == ""
    policies.apply(umbrella, SEED, actor="test")  # default deny: accepting new actions lets nothing through
    assert not admit(umbrella, token, {"action": "third_new_thing", "category": "x"}).forward


def test_the_review_queue_has_a_cap(umbrella, token, monkeypatch):
    monkeypatch.setattr(dispatched, "MAX_HELD", 2)
    for i in range(4):
        admit(umbrella, token, {"action": f"made_up_{i}", "category": "x"})
    assert Tool.objects.filter(server=umbrella).exclude(held_reason="").count() == 2
    assert "an operator must add it" in admit(umbrella, token, {"action": "made_up_9", "category": "x"}).message


def test_deny_if_and_approvals_see_the_actions_own_arguments(umbrella, token):
    policies.apply(umbrella, {"version": "1", "default": "deny", "tools": {
        "dataset_delete": {"action": "approve", "deny_if": [{"path": "args.recursive", "op": "eq", "value": True}]}}},
                   actor="test")
    call = {"category": "storage", "action": "dataset_delete", "params": {"id": "tank/x", "recursive": True}}
    refused = admit(umbrella, token, call)
    assert not refused.forward and refused.held is None and "args.recursive eq true" in refused.message
    held = admit(umbrella, token, {**call, "params": {"id": "tank/x", "confirm": True}})
    assert held.held is not None and held.held.tool.name == "dataset_delete"
    assert held.held.arguments["action"] == "dataset_delete"  # bound to the action and its arguments


def test_secrets_in_an_actions_arguments_are_redacted_in_the_audit_row(umbrella, token):
    policies.apply(umbrella, {"version": "1", "default": "allow"}, actor="test")
    admit(umbrella, token, {"category": "credentials", "action": "cloud_credential_create",
                            "params": {"name": "b2", "provider": "B2",
                                       "attributes": {"account": "acct", "key": "K0123456789secret"}}})
    stored = json.dumps(last_row().arguments)
    assert "K0123456789secret" not in stored and last_row().tool_name == "cloud_credential_create"


def test_a_session_limit_counts_per_agent_session(umbrella, token):
    policies.apply(umbrella, {"version": "1", "default": "deny", "tools": {"cloud_backup_run": {"limits": [
        {"counter": "per_session", "window": "hour", "max": 2, "scope": "session"}]}}}, actor="test")
    now = timezone.now()
    first = [admit(umbrella, token, backup(), session="s-one", now=now).forward for _ in range(3)]
    second = [admit(umbrella, token, backup(), session="s-two", now=now).forward for _ in range(3)]
    assert first == second == [True, True, False]
    assert "per_session|session|nas/" in last_row().counters[0]
    refused = admit(umbrella, token, backup(), session="", now=now + timedelta(seconds=1))
    assert not refused.forward and "no agent session" in refused.message


def test_set_dispatcher_command_declares_imports_and_turns_off(db):
    server = Server.objects.create(slug="nas2", name="NAS", transport=Server.Transport.STDIO, command=["x"])
    sync_tools(server, [UMBRELLA], timezone.now())
    out = io.StringIO()
    call_command("set_dispatcher", "nas2", "truenas", "--import", "truenas", stdout=out)
    assert "nas2/truenas is a dispatcher" in out.getvalue() and "278 actions in the catalogue" in out.getvalue()
    call_command("set_dispatcher", "nas2", "truenas", "--off", stdout=out)
    assert Tool.objects.filter(server=server, via__isnull=False, gone_at__isnull=True).count() == 0
    assert server.changes.filter(summary__contains="no longer a dispatcher").exists()
