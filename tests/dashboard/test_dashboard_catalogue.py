"""The tool catalogue: search as you type, filters, inert definitions, overrides, approving a changed definition."""

from __future__ import annotations

import pytest
from django.utils import timezone

from gateway.catalogue.review import side_by_side
from gateway.catalogue.sync import sync_tools
from gateway.models import Tool
from tests.dashboard.fixtures import HOSTILE_DESCRIPTION, htmx, truenas_definitions

TOOLS = "/servers/truenas/tools/"


def rows(body: str) -> int:
    return body.count("<tr>") - 1  # minus the header row


def test_it_searches_as_you_type_returning_only_the_rows(staff_client, truenas):
    response = staff_client.get(TOOLS, {"q": "cloud_backup"}, **htmx())
    body = response.content.decode()
    assert "<html" not in body and rows(body) == 7
    assert "7 of 279 tools" in body


@pytest.mark.parametrize(("params", "expected"), [
    ({"category": "destructive"}, lambda t: t.risk_category == "destructive"),
    ({"level": "critical"}, lambda t: t.risk_level == "critical"),
    ({"action": "deny"}, lambda t: t.risk_category not in ("read", "write") and t.name != "cloud_backup_run"),
    ({"action": "limited"}, lambda t: t.risk_category == "write" or t.name == "cloud_backup_run"),
], ids=["category", "level", "action-deny", "action-limited"])
def test_it_filters_by_category_level_and_the_policys_action(staff_client, truenas, params, expected):
    body = staff_client.get(TOOLS, params, **htmx()).content.decode()
    assert rows(body) == sum(1 for t in Tool.objects.filter(server=truenas) if expected(t))


def test_it_filters_tools_changed_since_approved_and_shows_the_change(staff_client, truenas):
    definitions = truenas_definitions()
    definitions[0] = {**definitions[0], "description": "Returns system info. Also deletes every pool."}
    sync_tools(truenas, definitions, timezone.now())
    body = staff_client.get(TOOLS, {"changed": "on"}, **htmx()).content.decode()
    assert rows(body) == 1 and "system_info" in body
    page = staff_client.get(TOOLS + "system_info/").content.decode()
    assert "The upstream changed this tool" in page and "Approve new definition" in page


def test_it_approves_the_definition_the_person_looked_at(staff_client, truenas):
    definitions = truenas_definitions()
    definitions[0] = {**definitions[0], "description": "changed"}
    sync_tools(truenas, definitions, timezone.now())
    tool = Tool.objects.get(server=truenas, name="system_info")
    assert staff_client.post(TOOLS + "system_info/approve/", {"hash": "stale"}).status_code == 302
    assert Tool.objects.get(pk=tool.pk).changed_since_approved  # a different hash approves nothing
    staff_client.post(TOOLS + "system_info/approve/", {"hash": tool.definition_hash})
    assert not Tool.objects.get(pk=tool.pk).changed_since_approved


def test_it_renders_a_hostile_description_as_inert_text(staff_client, truenas):
    Tool.objects.filter(server=truenas, name="pool_list").update(
        description=HOSTILE_DESCRIPTION, title='<b onmouseover="x()">bold</b>',
        input_schema={"type": "object", "properties": {"<svg onload=alert(3)>": {"description": "</pre><script>"}}})
    for url in (TOOLS + "pool_list/", TOOLS + "?q=pool_list", "/servers/truenas/policy/tools/pool_list/"):
        body = staff_client.get(url).content.decode()
        assert "<script>alert" not in body and "<a href=\"javascript" not in body and "<img src=x" not in body
        assert "<svg onload" not in body and "<b onmouseover" not in body and "</pre><script>" not in body
        assert "\u202e" not in body  # the override never reaches the browser
    body = staff_client.get(TOOLS + "pool_list/").content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body
    assert "javascript:alert(1)" in body  # shown, as text
    assert "[U+202E]" in body and "[U+202C]" in body


def test_it_overrides_a_classification_with_a_reason(staff_client, truenas):
    response = staff_client.post(TOOLS + "pool_list/override/", {"category": "write", "level": "high",
                                                                "reason": "lists encryption keys too"})
    assert response.status_code == 302
    tool = Tool.objects.get(server=truenas, name="pool_list")
    assert (tool.risk_category, tool.risk_level, tool.risk_overridden) == ("write", "high", True)
    assert "lists encryption keys too" in staff_client.get(TOOLS + "pool_list/").content.decode()


def test_it_refuses_an_override_without_a_reason_next_to_the_field(staff_client, truenas):
    response = staff_client.post(TOOLS + "pool_list/override/", {"category": "write", "level": "high", "reason": ""})
    assert response.status_code == 400 and "This field is required." in response.content.decode()
    assert not Tool.objects.get(server=truenas, name="pool_list").risk_overridden


def test_it_lines_up_two_definitions_side_by_side():
    rows_ = side_by_side("a\nb\nc", "a\nB\nc\nd")
    assert [(r.left, r.right, r.kind) for r in rows_] == [
        ("a", "a", "same"), ("b", "B", "changed"), ("c", "c", "same"), ("", "d", "added")]
    schema = side_by_side({"properties": {"x": {}}}, {"properties": {"y": {}}})
    assert any(r.kind == "changed" and '"x"' in r.left and '"y"' in r.right for r in schema)


def test_the_catalogue_shows_each_tools_description(staff_client, truenas):
    body = staff_client.get(TOOLS).content.decode()
    description = Tool.objects.get(server=truenas, name="pool_list").description
    assert description and description[:40] in body


def test_a_tools_page_says_what_the_policies_do_with_it_its_parameters_and_latest_calls(staff_client, truenas):
    from gateway import policies
    from gateway.grants import create_grant
    from gateway.models import Call

    grant = create_grant("ux-agent", [truenas], None).grant
    base = policies.applicable(truenas, grant).document
    policies.apply(truenas, dict(base, tools={**base.get("tools", {}), "pool_scrub": {"action": "approve"}}),
                   grant=grant, actor="test")
    Call.objects.create(server=truenas, server_slug="truenas", grant_name="ux-agent", tool_name="pool_scrub",
                        decision="approve", outcome="ok")
    body = staff_client.get(TOOLS + "pool_scrub/").content.decode()
    page = body[body.index("What the policies in force do"):]
    assert "every grant (the server&#x27;s policy v1)" in page
    assert "grant ux-agent (its own rules on the server&#x27;s, v1)" in page and "act-approve" in page
    params = body[body.index('aria-label="parameters"'):]
    assert "<th>Required</th>" in params
    assert '<td class="mono">action</td><td>string</td><td>required</td>' in params
    assert "one of &quot;START&quot;, &quot;STOP&quot;, &quot;PAUSE&quot;" in params
    assert body.count("/calls/") >= 2 and "ux-agent" in body[body.index("Latest calls"):]


def test_return_to_the_classifiers_decision_drops_a_persons_classification(staff_client, truenas):
    tool = Tool.objects.get(server=truenas, name="pool_list")
    staff_client.post(TOOLS + "pool_list/override/", {"category": "destructive", "level": "critical",
                                                      "reason": "to test"})
    tool.refresh_from_db()
    assert tool.risk_overridden and tool.risk_category == "destructive"
    assert "Return to the classifier" in staff_client.get(TOOLS + "pool_list/").content.decode()
    staff_client.post(TOOLS + "pool_list/classifier/")
    tool.refresh_from_db()
    assert not tool.risk_overridden and tool.risk_category == "read" and tool.risk_override_reason == ""
