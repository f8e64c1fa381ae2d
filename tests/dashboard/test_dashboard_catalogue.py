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
