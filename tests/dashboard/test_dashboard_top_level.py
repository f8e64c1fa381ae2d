"""The builder's policy-wide settings: hide, show_denied, on_deny and all_tools.limits go into the draft, show in
the preview and the diff, are saved, exported, imported and summarised in the history like every other field."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from gateway import policies
from gateway.models import PolicyVersion, Tool
from tests.dashboard.fixtures import htmx, seed_policy
from tests.dashboard.test_dashboard_builder import BUILDER, draft_text, exported

WIDE = BUILDER + "wide/"
FORM = {"on_deny": "not on the list; ask an operator", "show_denied": "on", "hide-0": "system_*", "hide-1": "",
        "limit-0-counter": "", "limit-0-max": "600", "limit-0-window": "minute", "limit-0-scope": "grant"}


def system_tools(truenas) -> set[str]:
    return set(Tool.objects.filter(server=truenas, name__startswith="system_").values_list("name", flat=True))


def test_it_sets_every_policy_wide_field_and_refreshes_the_rows_over_htmx(staff_client, truenas):
    response = staff_client.post(WIDE, FORM, **htmx())
    body = response.content.decode()
    assert response.status_code == 200 and response["HX-Trigger"] == "draft-changed"
    doc = json.loads(draft_text(staff_client))
    assert doc["hide"] == ["system_*"] and doc["show_denied"] is True
    assert doc["on_deny"] == FORM["on_deny"]
    assert doc["all_tools"] == {"limits": [{"counter": "all_calls", "window": "minute", "max": 600,
                                            "scope": "grant"}]}
    assert body.startswith('<details id="policy-wide"') and "<html" not in body
    assert f"hides {len(system_tools(truenas))} tools" in body
    assert '<div id="tool-groups" hx-swap-oob="true">' in body and 'id="draft-status" class="status card dirty"' in body
    assert body.count('<tr id="tool-') == Tool.objects.filter(server=truenas).count()
    row = body[body.index('aria-label="select system_info"'):]
    assert "act-hide\">hide" in row[:1200] and "/hide/0" in row[:1200]


def test_it_filters_the_refreshed_rows_like_the_page(staff_client, truenas):
    shown = staff_client.get(BUILDER, {"q": "system_"}, **htmx(HTTP_HX_TARGET="tool-groups")).content.decode()
    body = staff_client.post(WIDE, {**FORM, "q": "system_"}, **htmx()).content.decode()
    assert body.count('<tr id="tool-') == shown.count('<tr id="tool-') < Tool.objects.filter(server=truenas).count()


def test_it_warns_loudly_when_hide_holds_a_star(staff_client, truenas):
    body = staff_client.post(WIDE, {"hide-0": "*"}, **htmx()).content.decode()
    assert "Every tool is hidden." in body and f"hides all {Tool.objects.filter(server=truenas).count()} tools" in body
    assert body.count("<span class=\"badge act-hide\">") == Tool.objects.filter(server=truenas).count()
    page = staff_client.get(BUILDER).content.decode()
    assert 'class="loud-warning" role="alert"' in page


def test_it_warns_about_a_hide_entry_that_matches_nothing(staff_client, truenas):
    body = staff_client.post(WIDE, {"hide-0": "no_such_tool"}, **htmx()).content.decode()
    assert "</svg>matches no tool" in body


def test_clearing_the_fields_removes_them_from_the_document(staff_client, truenas):
    staff_client.post(WIDE, FORM, **htmx())
    staff_client.post(WIDE, {"hide-0": "", "limit-0-max": "", "on_deny": ""}, **htmx())
    doc = json.loads(draft_text(staff_client))
    assert [k for k in ("show_denied", "on_deny", "hide", "all_tools") if k in doc] == []
    assert doc["risk"] == seed_policy()["risk"]


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"hide-0": "pool_list", "hide-1": "", "hide-2": "pool_list"}, "hide-2", "duplicate entry"),
    ({"limit-0-counter": "c", "limit-0-max": "0", "limit-0-window": "minute"}, "limit-0-max", "max must be"),
    ({"limit-0-counter": "c", "limit-0-max": "5", "limit-0-window": "fortnight"}, "limit-0-window",
     "window must be"),
    ({"limit-0-counter": "bad name!", "limit-0-max": "5", "limit-0-window": "minute"}, "limit-0-counter", "counter"),
    ({"limit-0-counter": "c", "limit-0-max": "many", "limit-0-window": "minute"}, "limit-0-max", "not a number"),
], ids=["duplicate-hide", "max-zero", "bad-window", "bad-counter", "max-not-a-number"])
@pytest.mark.parametrize("over_htmx", [True, False], ids=["htmx", "plain"])
def test_it_shows_a_validation_error_next_to_the_field_that_caused_it(staff_client, truenas, fields, field, message,
                                                                      over_htmx):
    response = staff_client.post(WIDE, fields, **(htmx() if over_htmx else {}))
    body = response.content.decode()
    assert response.status_code == (200 if over_htmx else 400)  # htmx swaps the form in with its errors
    assert ('<html' in body) is not over_htmx and "<details id=\"policy-wide\" class=\"card policy-wide\" open>" in body
    field_at = body.index(f'name="{field}"')
    assert 0 < body.index(message, field_at) - field_at < 700
    assert "HX-Trigger" not in response
    doc = json.loads(draft_text(staff_client))
    assert "hide" not in doc and "all_tools" not in doc


def test_a_counter_clash_with_a_rule_elsewhere_is_shown_with_its_pointer(staff_client, truenas):
    body = staff_client.post(WIDE, {"limit-0-counter": "write_tools", "limit-0-max": "5",
                                    "limit-0-window": "hour"}, **htmx()).content.decode()
    assert "/risk/write/limits/0: counter &#x27;write_tools&#x27; is already used" in body


def test_without_htmx_it_redirects_back_to_the_builder(staff_client, truenas):
    response = staff_client.post(WIDE, FORM)
    assert response.status_code == 302 and response["Location"] == BUILDER
    assert json.loads(draft_text(staff_client))["hide"] == ["system_*"]


def test_a_read_only_user_cannot_change_policy_wide_fields(reader_client, truenas):
    response = reader_client.post(WIDE, FORM, **htmx())
    assert response.status_code == 403
    assert "hide" not in json.loads(draft_text(reader_client))
    body = reader_client.get(BUILDER).content.decode()
    assert 'id="policy-wide"' in body and "Apply to the draft" not in body


def test_it_sends_anonymous_posts_to_sign_in(client, truenas):
    response = client.post(WIDE, FORM)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_it_refuses_a_post_without_a_csrf_token(csrf_client, truenas):
    assert csrf_client.post(WIDE, FORM, HTTP_HX_REQUEST="true").status_code == 403
    page = csrf_client.get(BUILDER)
    token = page.cookies["csrftoken"].value
    assert csrf_client.post(WIDE, FORM, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token).status_code == 200


# ---------------------------------------------------------------- preview, diff, save, export, import, history


def test_the_preview_and_diff_show_the_policy_wide_fields_and_save_keeps_them_exactly(staff_client, truenas):
    staff_client.post(WIDE, FORM, **htmx())
    staff_client.post(BUILDER + "globs/new/", {"key": "dataset_*", "props_key": "dataset_*", "action": "allow",
                                               "limit-0-max": "20", "limit-0-window": "minute",
                                               "limit-0-counter": "", "limit-0-scope": "grant"})
    preview = staff_client.get(BUILDER + "preview/", **htmx()).content.decode()
    for line in ("show_denied: false → true", "on_deny: changed", "~ hide: + system_*", "~ all_tools: limits changed",
                 "+ tools/dataset_*"):
        assert line in preview
    assert 'class="d-add">+  &quot;hide&quot;: [' in preview
    text = draft_text(staff_client)
    assert staff_client.post(BUILDER + "save/", {"confirm": "1"}).status_code == 302
    assert exported() == text
    assert staff_client.get(BUILDER + "export/").content.decode() == text
    active = policies.active_version(truenas)
    assert "hide: + system_*" in active.summary and "tools/dataset_*" in active.summary
    history = staff_client.get(BUILDER + "versions/", {"a": 1, "b": 2}).content.decode()
    assert "+ system_*" in history and "dataset___rate" in history


def test_an_imported_file_fills_the_policy_wide_form_and_the_glob_card(staff_client, truenas):
    doc = {**seed_policy(), "show_denied": True, "hide": ["pool_export", "system_*"],
           "all_tools": {"limits": [{"counter": "all_calls", "window": 60, "max": 100}]},
           "tools": {"dataset_*": {"rate_limit": {"max": 30, "window": 60}}}}
    response = staff_client.post(BUILDER + "import/", {"file": SimpleUploadedFile("p.json", json.dumps(doc).encode())})
    assert response.status_code == 302
    body = staff_client.get(BUILDER).content.decode()
    assert 'name="hide-0" value="pool_export"' in body and 'name="hide-1" value="system_*"' in body
    assert 'name="show_denied" checked' in body and 'name="limit-0-max" value="100"' in body
    assert "2 hide entries" in body and "denied tools listed" in body and "1 limit on every call" in body
    card = body[body.index('id="glob-rules"'):]
    assert "30 per minute per grant (dataset___rate)" in card


def test_a_rollback_restores_the_policy_wide_fields(staff_client, truenas):
    staff_client.post(WIDE, FORM, **htmx())
    staff_client.post(BUILDER + "save/", {"confirm": "1"})
    staff_client.post(BUILDER + "versions/1/rollback/", {"confirm": "1"})
    assert "hide" not in policies.active_version(truenas).document
    staff_client.post(BUILDER + "versions/2/rollback/", {"confirm": "1"})
    active = policies.active_version(truenas)
    assert active.number == 4 and active.document["hide"] == ["system_*"]
    assert PolicyVersion.objects.get(server=truenas, number=2).document == active.document
    assert exported() == draft_text(staff_client)
