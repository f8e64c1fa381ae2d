"""Glob rules in the builder: created, edited and deleted like a tool's rule; each shows the tools it matches
(by the engine's own select_rule) and warns when it matches nothing."""

from __future__ import annotations

import json

import pytest

from gateway.models import PolicyVersion, Tool
from tests.dashboard.fixtures import htmx
from tests.dashboard.test_dashboard_builder import BUILDER, draft_text

GLOBS = BUILDER + "globs/"
LIMIT_20 = {"action": "allow", "limit-0-counter": "", "limit-0-max": "20", "limit-0-window": "minute",
            "limit-0-scope": "grant"}


def dataset_tools(truenas) -> list[str]:
    return list(Tool.objects.filter(server=truenas, name__startswith="dataset_").order_by("position", "name")
                .values_list("name", flat=True))


def add_glob(client, key="dataset_*", **fields):
    return client.post(GLOBS + "new/", {"key": key, "props_key": key, **LIMIT_20, **fields})


def test_it_creates_a_glob_rule_with_a_limit_in_the_draft(staff_client, truenas):
    response = add_glob(staff_client)
    assert response.status_code == 302 and response["Location"] == BUILDER
    assert json.loads(draft_text(staff_client))["tools"]["dataset_*"] == {
        "limits": [{"counter": "dataset___rate", "window": "minute", "max": 20, "scope": "grant"}]}
    assert PolicyVersion.objects.filter(server=truenas).count() == 1  # a draft until saved


def test_the_editor_shows_how_many_tools_a_pattern_matches_and_lists_them(staff_client, truenas):
    body = staff_client.get(GLOBS + "new/", {"key": "dataset_*"}).content.decode()
    names = dataset_tools(truenas)
    assert f"Matches {len(names)} tools" in body
    assert all(f">{name}</a>" in body for name in names)
    assert 'name="key" value="dataset_*"' in body and "Delete this rule" not in body


def test_it_offers_argument_constraints_for_the_arguments_every_matched_tool_has(staff_client, truenas):
    body = staff_client.get(GLOBS + "new/", {"key": "dataset_*lock"}).content.decode()
    assert 'aria-label="id pattern"' in body and "unlock_options" not in body
    response = staff_client.post(GLOBS + "new/", {"key": "dataset_*lock", "props_key": "dataset_*lock",
                                                  "action": "approve", "arg-0-pattern": "^tank/",
                                                  "arg-0-presence": "required"})
    assert response.status_code == 302
    assert json.loads(draft_text(staff_client))["tools"]["dataset_*lock"] == {
        "action": "approve", "arguments": {"properties": {"id": {"pattern": "^tank/"}}, "required": ["id"]}}


@pytest.mark.parametrize(("key", "warning"), [
    ("Dataset_*", "matches no tool of truenas"),
    ("dataset_list", "is not a pattern"),
], ids=["case-sensitive-no-match", "not-a-glob"])
def test_it_warns_as_you_type_when_a_pattern_matches_nothing(staff_client, truenas, key, warning):
    response = staff_client.get(GLOBS + "matches/", {"key": key}, **htmx())
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body and warning in body


def test_the_builder_lists_each_glob_with_its_matches_and_warns_about_one_that_matches_nothing(staff_client,
                                                                                              truenas):
    add_glob(staff_client)
    add_glob(staff_client, key="nothing_*", action="deny")
    staff_client.post(BUILDER + "action/", {"tool": "dataset_delete", "set": "deny"}, **htmx())
    body = staff_client.get(BUILDER).content.decode()
    card = body[body.index('id="glob-rules"'):body.index("</section>", body.index('id="glob-rules"'))]
    names = dataset_tools(truenas)
    assert f"{len(names)} tools (1 decided elsewhere)" in card
    assert "dataset_delete</a> — decided by <code>/tools/dataset_delete</code>" in card
    assert "</svg>matches no tool" in card and ">nothing_*</a>" in card
    row = body[body.index('aria-label="select dataset_list"'):]
    assert 'href="/servers/truenas/policy/globs/dataset_*/"><code class="ptr">/tools/dataset_*<' in row[:1500]


def test_the_glob_card_reloads_itself_over_htmx(staff_client, truenas):
    add_glob(staff_client)
    response = staff_client.get(GLOBS, **htmx())
    body = response.content.decode()
    assert "<html" not in body and 'hx-trigger="draft-changed from:body"' in body and "dataset_*" in body
    assert "<html" in staff_client.get(GLOBS).content.decode()  # the same card as a page without htmx


def test_it_edits_renames_in_place_and_deletes_a_glob_rule(staff_client, truenas):
    add_glob(staff_client)
    url = GLOBS + "dataset_%2A/"
    page = staff_client.get(url).content.decode()
    assert 'name="limit-0-max" value="20"' in page and "Delete this rule" in page
    response = staff_client.post(url, {"key": "dataset_[gl]*", "props_key": "dataset_*", **LIMIT_20,
                                       "limit-0-max": "10", "action": "approve"})
    assert response.status_code == 302
    tools = json.loads(draft_text(staff_client))["tools"]
    assert "dataset_*" not in tools and list(tools).index("dataset_[gl]*") == len(tools) - 1
    assert tools["dataset_[gl]*"]["action"] == "approve" and tools["dataset_[gl]*"]["limits"][0]["max"] == 10
    assert staff_client.get(url).status_code == 404  # the old name is gone
    response = staff_client.post(GLOBS + "dataset_%5Bgl%5D%2A/", {"delete": "1"})
    assert response.status_code == 302
    assert "dataset_[gl]*" not in json.loads(draft_text(staff_client)).get("tools", {})


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"key": "dataset_list"}, "key", "names one tool"),
    ({"key": ""}, "key", "write a pattern"),
    ({"key": "dataset_*", "limit-0-max": "0"}, "limit-0-max", "max must be"),
    ({"key": "dataset_*", "limit-0-window": "fortnight"}, "limit-0-window", "window must be"),
    ({"key": "dataset_*", "action": "inherit"}, "action", "Delete removes"),
    ({"key": "dataset_*", "conditions": "{nope"}, "conditions", "not JSON"),
], ids=["exact-name", "empty", "max-zero", "bad-window", "no-action", "bad-json"])
def test_it_shows_a_validation_error_next_to_the_glob_field_that_caused_it(staff_client, truenas, fields, field,
                                                                           message):
    response = staff_client.post(GLOBS + "new/", {"props_key": "dataset_*", **LIMIT_20, **fields})
    body = response.content.decode()
    assert response.status_code == 400
    field_at = body.index(f'name="{field}"')
    assert 0 < body.index(message) - field_at < 1500
    assert json.loads(draft_text(staff_client)).get("tools", {}).keys() == {"cloud_backup_run"}


def test_it_refuses_a_second_rule_for_the_same_pattern(staff_client, truenas):
    add_glob(staff_client)
    response = add_glob(staff_client, limit_0_max="5")
    assert response.status_code == 400 and "there is a rule for dataset_* already" in response.content.decode()


def test_a_read_only_user_sees_glob_rules_but_cannot_change_them(reader_client, staff_client, truenas):
    add_glob(staff_client)  # in alice's session only: bob's draft is the active version
    assert reader_client.get(GLOBS + "new/", {"key": "dataset_*"}).status_code == 200
    body = reader_client.get(BUILDER).content.decode()
    assert "Add a glob rule" not in body and "Apply to the draft" not in body
    assert reader_client.post(GLOBS + "new/", {"key": "pool_*", **LIMIT_20}).status_code == 403
    assert "pool_*" not in json.loads(draft_text(reader_client)).get("tools", {})


def test_it_sends_anonymous_visitors_to_sign_in(client, truenas):
    for response in (client.get(GLOBS), client.get(GLOBS + "new/"), client.post(GLOBS + "new/", {"key": "x_*"})):
        assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_it_refuses_a_glob_post_without_a_csrf_token(csrf_client, truenas):
    response = csrf_client.post(GLOBS + "new/", {"key": "dataset_*", **LIMIT_20})
    assert response.status_code == 403
