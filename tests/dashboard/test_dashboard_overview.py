"""The overview (issue 13, "Beyond fixing"): the landing page counts what agents did in the last hour or day from the
call log, lists what needs a person, and guides a new gateway through the first-run checklist; the builder offers
policy templates."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, PolicyVersion, Server, Tool


def calls(server, rows):
    now = timezone.now()
    Call.objects.bulk_create([Call(created_at=now - ago, server=server, server_slug=server.slug, grant_name=grant,
                                   tool_name=tool, decision=decision,
                                   outcome="refused" if decision == "deny" else "ok")
                              for ago, tool, grant, decision in rows])


def test_the_landing_page_counts_the_last_hour_and_day_by_decision(staff_client, truenas):
    minutes = timedelta(minutes=1)
    calls(truenas, [(2 * minutes, "pool_list", "a", "allow"), (3 * minutes, "pool_list", "a", "allow"),
                    (4 * minutes, "dataset_delete", "b", "deny"), (5 * minutes, "cloud_backup_run", "a", "approve"),
                    (3 * 60 * minutes, "pool_list", "c", "allow")])  # three hours ago: in the day only
    hour = staff_client.get("/").content.decode()
    assert "4 calls: 2 allowed, 1 held for approval, 1 refused by policy" in hour
    most = hour[hour.index("Most called"):hour.index("Most refused")]
    assert most.index("pool_list") < most.index("dataset_delete") and ">2<" in most
    refused = hour[hour.index("Most refused"):hour.index("Per grant")]
    assert "dataset_delete" in refused and "pool_list" not in refused
    assert "<svg class=\"chart\"" in hour and "<rect class=\"seg-deny\"" in hour
    day = staff_client.get("/", {"period": "day"}).content.decode()
    assert "5 calls: 3 allowed, 1 held for approval, 1 refused by policy" in day


def test_it_lists_what_needs_a_person(staff_client, truenas, hold):
    hold()
    Tool.objects.filter(server=truenas, name="pool_list").update(definition_hash="f" * 64)
    Server.objects.filter(slug="truenas").update(health="error", last_error="connection refused")
    body = staff_client.get("/").content.decode()
    assert "1 held call waiting for approval" in body
    assert "1 tool changed since approved" in body and "truenas/pool_list" in body
    assert "connection refused" in body


def test_an_empty_gateway_gets_the_first_run_checklist_until_an_agent_is_controlled(staff_client, db):
    body = staff_client.get("/").content.decode()
    assert "From here to an agent that is controlled" in body
    assert body.count('class="done"') == 0 and 'href="/servers/new/">Register a server' in body


def test_the_checklist_marks_each_step_done_and_disappears_at_the_end(staff_client, truenas):
    assert PolicyVersion.objects.filter(server=truenas, is_active=True).exists()
    body = staff_client.get("/").content.decode()
    assert body.count('<li class="done">') == 3 and "Create a grant" in body  # server, tools and policy are done
    create_grant("agent", [truenas], None)
    calls(truenas, [(timedelta(seconds=5), "pool_list", "agent", "allow")])
    assert "From here to an agent that is controlled" not in staff_client.get("/").content.decode()


def test_templates_load_into_the_draft_and_ask_before_replacing_unsaved_changes(staff_client, truenas):
    page = staff_client.get("/servers/truenas/policy/template/").content.decode()
    assert "Risk tiers (recommended)" in page and "Read-only" in page
    staff_client.post("/servers/truenas/policy/template/", {"template": "read-only"})
    preview = staff_client.get("/servers/truenas/policy/preview/").content.decode()
    assert "&quot;read&quot;: {}" in preview
    asked = staff_client.post("/servers/truenas/policy/template/", {"template": "risk-tiers"}).content.decode()
    assert "Replace the draft" in asked and "This cannot be undone" in asked
    staff_client.post("/servers/truenas/policy/template/", {"template": "risk-tiers", "confirm": "1"})
    staff_client.post("/servers/truenas/policy/save/", {"confirm": "1"})
    risk = policies.active_version(truenas).document["risk"]
    assert risk["execute"] == {"action": "approve"} and risk["destructive"]["action"] == "deny"


def test_most_called_is_exact_across_servers_sharing_tool_names(truenas):
    from dashboard.overview import TOP, most_called

    other = Server.objects.create(slug="nas2", name="NAS 2", transport="http", url="http://127.0.0.1:9/mcp")
    rows = [(truenas, "shared", 5), (other, "shared", 5), (truenas, "solo", 7)]
    rows += [(truenas, f"t{i}", 6) for i in range(TOP)]
    now = timezone.now()
    Call.objects.bulk_create([Call(created_at=now, server=server, server_slug=server.slug, tool_name=name,
                                   decision="allow", outcome="ok") for server, name, n in rows for _ in range(n)])
    found = most_called(Call.objects.filter(created_at__gte=now - timedelta(minutes=1)))
    # "shared" has 10 calls by name, but 5 per server: neither of its pairs ranks among the top 8
    assert found[0] == ("truenas", "solo", 7) and all(name != "shared" for _, name, _ in found)
    assert len(found) == TOP
