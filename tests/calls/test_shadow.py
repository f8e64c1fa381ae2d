"""A draft run in shadow (issue 15, part 2): decided beside the policy in force on every live call, never enforced;
its divergences recorded; ended by saving or dropping it. Driven through calls.admit here; the end-to-end test with
a real client is tests/e2e/test_shadow_live.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gateway import calls, policies, shadows
from gateway.calls import shadowing
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import ShadowDivergence
from tests.policy.policy_cases import SEED

TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in ("cloud_backup_run", "pool_list", "dataset_delete")]
TIGHTER = {**SEED, "tools": {"cloud_backup_run": {"limits": [
    {"counter": "cloud_backup_run_rate", "window": "minute", "max": 3, "scope": "grant"}]}, "pool_list": {}}}


@pytest.fixture
def live(server):
    sync_tools(server, TOOLS, timezone.now())
    policies.apply(server, SEED, actor="test")
    return server, create_grant("agent", [server], None).token


def test_the_shadow_decides_every_call_and_records_only_where_it_differs(live):
    server, token = live
    shadow = shadows.start(server, TIGHTER)
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    got = [calls.admit(token, server, "cloud_backup_run", {}, start + timedelta(seconds=i)).forward for i in range(5)]
    assert got == [True] * 5  # never enforced: the policy in force allows ten a minute
    pool = calls.admit(token, server, "pool_list", {}, start + timedelta(seconds=10))
    assert not pool.forward  # the policy in force denies it; the draft would allow it
    rows = list(ShadowDivergence.objects.filter(shadow=shadow).order_by("pk"))
    assert [(r.tool_name, r.actual, r.shadow_kind) for r in rows] == [
        ("cloud_backup_run", "allow", "limit"), ("cloud_backup_run", "allow", "limit"),
        ("pool_list", "deny", "allow")]
    assert rows[0].reason.startswith("rate limit cloud_backup_run_rate exceeded: 3 per minute")
    assert rows[2].call_id == pool.call_id and shadows.seen(shadow) == 6


def test_a_grant_with_rules_of_its_own_is_not_shadowed(live):
    server, token = live
    new = create_grant("own", [server], None)
    policies.apply(server, {**SEED, "tools": {**SEED["tools"], "dataset_delete": {}}}, grant=new.grant, actor="t")
    shadow = shadows.start(server, TIGHTER)
    calls.admit(new.token, server, "pool_list", {}, timezone.now())
    assert not ShadowDivergence.objects.filter(shadow=shadow).exists()
    calls.admit(token, server, "pool_list", {}, timezone.now())
    assert ShadowDivergence.objects.filter(shadow=shadow).count() == 1


def test_ending_the_shadow_stops_it(live):
    server, token = live
    shadow = shadows.start(server, TIGHTER)
    shadows.end(server, "dropped")
    calls.admit(token, server, "pool_list", {}, timezone.now())
    assert not ShadowDivergence.objects.filter(shadow=shadow).exists()
    assert shadows.running(server) is None


def test_starting_again_replaces_the_running_one(live):
    server, _ = live
    first = shadows.start(server, TIGHTER)
    second = shadows.start(server, SEED)
    first.refresh_from_db()
    assert first.ended_at is not None and "replaced" in first.end_reason and shadows.running(server) == second


def test_a_broken_shadow_never_breaks_the_call(live, monkeypatch):
    server, token = live
    shadows.start(server, TIGHTER)
    monkeypatch.setattr(shadowing, "evaluate", lambda *a: 1 / 0)
    assert calls.admit(token, server, "cloud_backup_run", {}, timezone.now()).forward


def test_the_builder_runs_the_draft_in_shadow_and_saving_ends_it(live, client, django_user_model):
    server, token = live
    client.force_login(django_user_model.objects.create_user("alice", is_staff=True))
    base = f"/servers/{server.slug}/policy/"
    client.post(base + "default/", {"default": "allow"})
    assert "Run the draft in shadow" in client.get(base + "preview/", HTTP_HX_REQUEST="true").content.decode()
    client.post(base + "shadow/", {"op": "start"})
    calls.admit(token, server, "pool_list", {}, timezone.now())
    preview = client.get(base + "preview/", HTTP_HX_REQUEST="true").content.decode()
    assert "runs in shadow" in preview and "1 denied → allowed" in preview and "pool_list" in preview
    client.post(base + "save/", {"confirm": "1", "note": "shadow looked right"})
    ended = shadows.running(server)
    assert ended is None
    assert "saved as v2 by alice" in client.get(base + "preview/", HTTP_HX_REQUEST="true").content.decode()
