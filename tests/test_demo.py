"""`manage.py demo` loads the TrueNAS simulator, its classified tools, the seed policy, a user and a grant — once."""

from __future__ import annotations

import io
import json
from collections import Counter as Tally

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from gateway.models import Grant, PolicyVersion, Server, Tool


def demo() -> str:
    out = io.StringIO()
    call_command("demo", stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_the_demo_loads_everything_and_a_second_run_duplicates_nothing(monkeypatch):
    monkeypatch.delenv("PORTCULLIS_ADMIN_PASSWORD", raising=False)
    first = demo()
    server = Server.objects.get(slug="truenas")
    tools = Tool.objects.filter(server=server)
    assert tools.count() == 278
    assert set(tools.values_list("risk_category", flat=True)) >= {"read", "write", "execute", "destructive"}
    assert PolicyVersion.objects.filter(server=server, is_active=True).count() == 1
    token = next(line.rsplit(" ", 1)[1] for line in first.splitlines() if line.startswith("token"))
    assert token.startswith("pcl_") and "claude mcp add --transport http truenas" in first
    assert "password (shown once)" in first

    second = demo()
    assert token not in second and "password" not in second.replace("password unchanged", "")
    assert "already" in second
    assert Server.objects.count() == 2 and tools.count() == 278
    assert PolicyVersion.objects.count() == 2 and Grant.objects.count() == 1
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_the_seed_policy_is_what_the_issue_asks_for():
    demo()
    out = io.StringIO()
    call_command("export_policy", "truenas", stdout=out)
    policy = json.loads(out.getvalue())
    assert policy["default"] == "deny"
    assert policy["risk"]["read"] == {}
    assert policy["risk"]["destructive"]["action"] == "deny" and "data" in policy["risk"]["destructive"]["on_deny"]
    assert policy["risk"]["write"]["limits"][0]["max"] == 30
    assert policy["tools"]["cloud_backup_run"]["limits"] == [
        {"counter": "cloud_backup_run_rate", "window": "minute", "max": 10, "scope": "grant"}]


@pytest.mark.django_db
def test_the_demo_takes_the_admin_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("PORTCULLIS_ADMIN_PASSWORD", "correct-horse-battery-staple")
    out = demo()
    assert "correct-horse-battery-staple" not in out
    assert get_user_model().objects.get(username="admin").check_password("correct-horse-battery-staple")


@pytest.mark.django_db
def test_the_demo_classifies_the_truenas_tools_by_risk():
    demo()
    flat = Tool.objects.filter(server__slug="truenas")
    tally = Tally(flat.values_list("risk_category", flat=True))
    assert tally["read"] > 90 and tally["destructive"] > 30
    assert flat.get(name="dataset_delete").risk_category == "destructive"
    assert flat.get(name="cloud_backup_run").risk_category == "execute"
    assert flat.get(name="pool_list").risk_category == "read"


@pytest.mark.django_db
def test_the_demo_has_the_one_tool_server_governed_by_the_same_seed_policy():
    """The real TrueNAS server's shape: one tool whose 278 actions are classified as the flat tools are."""
    demo()
    umbrella = Server.objects.get(slug="truenas-umbrella")
    assert umbrella.command[-1] == "--umbrella"
    listed = Tool.objects.filter(server=umbrella, via__isnull=True)
    assert [t.name for t in listed] == ["truenas"] and listed[0].dispatch["action"] == "/action"
    actions = {t.name: (t.risk_category, t.risk_level) for t in Tool.objects.filter(server=umbrella, via=listed[0])}
    flat = {t.name: (t.risk_category, t.risk_level) for t in Tool.objects.filter(server__slug="truenas")}
    assert actions == flat
    documents = {v.server.slug: v.document for v in PolicyVersion.objects.filter(is_active=True)}
    assert documents["truenas"] == documents["truenas-umbrella"]
    assert set(Grant.objects.get(name="demo-agent").servers.values_list("slug", flat=True)) == {
        "truenas", "truenas-umbrella"}
