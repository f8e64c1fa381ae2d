"""The policy builder: clicks change a session draft; the preview is what export_policy prints; save, import,
export, history, rollback and per-grant overrides go through gateway.policies."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from gateway import policies
from gateway.grants import create_grant
from gateway.models import PolicyVersion, Tool
from gateway.policy import canonical_json
from tests.dashboard.fixtures import htmx, seed_policy

BUILDER = "/servers/truenas/policy/"


def draft_text(client) -> str:
    import html

    body = client.get(BUILDER + "preview/").content.decode()
    start = body.index('id="policy-json">') + len('id="policy-json">')
    return html.unescape(body[start:body.index("</pre>", start)])


def exported(server="truenas", **opts) -> str:
    out = io.StringIO()
    call_command("export_policy", server, stdout=out, **opts)
    return out.getvalue()


def test_it_lists_every_tool_grouped_by_risk_with_the_engines_action(staff_client, truenas):
    body = staff_client.get(BUILDER).content.decode()
    assert body.count('<tr id="tool-') == Tool.objects.filter(server=truenas).count() == 279
    assert 'aria-label="destructive tools"' in body and 'aria-label="read tools"' in body
    row = body[body.index(">cloud_backup_run<"):]
    assert "act-limited\">limited" in row[:800] and "/tools/cloud_backup_run" in row[:800]


def test_it_changes_one_tool_with_a_click_and_returns_only_that_row(staff_client, truenas):
    response = staff_client.post(BUILDER + "action/", {"tool": "pool_list", "set": "deny"}, **htmx())
    body = response.content.decode()
    assert response.status_code == 200 and response["HX-Trigger"] == "draft-changed"
    assert body.count('<tr id="tool-') == 1 and "act-deny\">deny" in body
    assert 'id="draft-status"' in body and 'hx-swap-oob="true"' in body and "1 change" in body
    assert json.loads(draft_text(staff_client))["tools"]["pool_list"] == {"action": "deny"}
    assert PolicyVersion.objects.filter(server=truenas).count() == 1  # nothing saved yet


def test_it_searches_and_filters_over_htmx(staff_client, truenas):
    body = staff_client.get(BUILDER, {"q": "cloud_backup", "category": "execute"},
                            **htmx(HTTP_HX_TARGET="tool-groups")).content.decode()
    assert "<html" not in body
    names = {t.name for t in Tool.objects.filter(name__contains="cloud_backup", risk_category="execute")}
    assert body.count('<tr id="tool-') == len(names) > 0


def confirmed(client, data: dict) -> tuple[str, dict]:
    """A bulk action's first step (what it would change), then its confirmation as the panel's form posts it."""
    import re

    first = client.post(BUILDER + "bulk/", data, **htmx())
    assert first.status_code == 200, first.content
    panel = first.content.decode()
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', panel))
    fields["tool"] = re.findall(r'<input type="hidden" name="tool" value="([^"]*)"', panel)
    fields.pop("csrfmiddlewaretoken", None)
    return panel, fields


def test_a_bulk_action_changes_only_the_selected_tools_the_filter_shows_after_saying_so(staff_client, truenas):
    staff_client.post(BUILDER + "select/", {"what": "matching", "category": "destructive"}, **htmx())
    body = staff_client.get(BUILDER, {"q": "pool"}, **htmx(HTTP_HX_TARGET="tool-groups")).content.decode()
    destructive = set(Tool.objects.filter(server=truenas, risk_category="destructive").values_list("name", flat=True))
    shown = {n for n in destructive if "pool" in n}
    assert f"<strong>{len(destructive)}</strong> selected" in body
    assert f"{len(destructive) - len(shown)} selected not shown" in body
    before = draft_text(staff_client)
    panel, fields = confirmed(staff_client, {"set": "approve", "q": "pool"})
    assert draft_text(staff_client) == before  # the first step changes nothing
    assert f"{len(destructive) - len(shown)} more selected tools are hidden by the search or filters" in panel
    assert set(fields["tool"]) == shown
    response = staff_client.post(BUILDER + "bulk/", {**fields, "q": "pool"}, **htmx())
    assert response.status_code == 200 and "changed in the draft" in response.content.decode()
    tools = json.loads(draft_text(staff_client))["tools"]
    held = {n for n, r in tools.items() if r.get("action") == "approve"}
    assert shown <= held and not (destructive - shown) & held
    assert not staff_client.session.get(f"builder:{truenas.pk}:0:selection")  # acted on: the selection is done


def test_a_whole_page_load_starts_with_nothing_selected(staff_client, truenas):
    staff_client.post(BUILDER + "select/", {"what": "toggle", "tool": "pool_list"}, **htmx())
    fragment = staff_client.get(BUILDER, **htmx(HTTP_HX_TARGET="tool-groups")).content.decode()
    assert "<strong>1</strong> selected" in fragment
    assert "<strong>0</strong> selected" in staff_client.get(BUILDER).content.decode()


def test_a_selection_the_filter_hides_entirely_is_refused_with_what_to_do(staff_client, truenas):
    staff_client.post(BUILDER + "select/", {"what": "toggle", "tool": "pool_list"}, **htmx())
    response = staff_client.post(BUILDER + "bulk/", {"set": "deny", "q": "service_restart"}, **htmx())
    assert response.status_code == 400 and "hidden by the search or filters" in response.content.decode()


def test_bulk_deny_of_tools_already_denied_says_nothing_changes_and_writes_nothing(staff_client, truenas):
    staff_client.post(BUILDER + "risk/", {"risk": "destructive", "set": "deny"}, **htmx())
    staff_client.post(BUILDER + "select/", {"what": "matching", "category": "destructive"}, **htmx())
    before = draft_text(staff_client)
    panel, fields = confirmed(staff_client, {"set": "deny", "category": "destructive"})
    assert "Nothing changes for agents" in panel and "nothing changes" in panel and not fields.get("confirm")
    assert draft_text(staff_client) == before


def test_bulk_deny_keeps_or_asks_for_the_reason_agents_read(staff_client, truenas):
    for name in ("pool_list", "disk_list"):
        staff_client.post(BUILDER + "select/", {"what": "toggle", "tool": name}, **htmx())
    panel, fields = confirmed(staff_client, {"set": "deny"})
    assert 'name="reason"' in panel and "Deny 2 tools" in panel
    staff_client.post(BUILDER + "bulk/", {**fields, "reason": "reads are paused during the migration"}, **htmx())
    tools = json.loads(draft_text(staff_client))["tools"]
    assert tools["pool_list"] == {"action": "deny", "on_deny": "reads are paused during the migration"}


def test_it_limits_the_selection_each_with_its_own_counter(staff_client, truenas):
    for name in ("pool_list", "disk_list"):
        staff_client.post(BUILDER + "select/", {"what": "toggle", "tool": name}, **htmx())
    panel, fields = confirmed(staff_client, {"set": "limit", "max": "30", "window": "minute", "scope": "grant"})
    assert "Limit 2 tools" in panel
    staff_client.post(BUILDER + "bulk/", fields, **htmx())
    tools = json.loads(draft_text(staff_client))["tools"]
    assert tools["pool_list"] == {"limits": [{"counter": "pool_list_rate", "window": "minute", "max": 30,
                                              "scope": "grant"}]}


def test_without_javascript_the_confirmation_is_a_page_and_the_action_redirects(staff_client, truenas):
    staff_client.post(BUILDER + "select/", {"what": "toggle", "tool": "pool_list"})
    page = staff_client.post(BUILDER + "bulk/", {"set": "hide"})
    assert page.status_code == 200 and "<html" in page.content.decode() and "Hide 1 tool?" in page.content.decode()
    done = staff_client.post(BUILDER + "bulk/", {"set": "hide", "confirm": "1", "tool": "pool_list"})
    assert done.status_code == 302
    assert json.loads(draft_text(staff_client))["tools"]["pool_list"] == {"action": "hide"}


def test_it_says_what_to_do_when_a_bulk_action_has_nothing_selected(staff_client, truenas):
    response = staff_client.post(BUILDER + "bulk/", {"set": "deny"}, **htmx())
    assert response.status_code == 400 and "select some tools first" in response.content.decode()


def test_it_sets_the_default_and_a_whole_risk_tier(staff_client, truenas):
    staff_client.post(BUILDER + "default/", {"default": "allow"}, **htmx())
    staff_client.post(BUILDER + "risk/", {"risk": "execute", "set": "approve"}, **htmx())
    doc = json.loads(draft_text(staff_client))
    assert doc["default"] == "allow" and doc["risk"]["execute"] == {"action": "approve"}


def test_it_saves_the_draft_as_a_new_version_that_export_policy_prints_exactly(staff_client, truenas):
    staff_client.post(BUILDER + "action/", {"tool": "pool_list", "set": "approve"}, **htmx())
    preview = draft_text(staff_client)
    response = staff_client.post(BUILDER + "save/", {"confirm": "1"})
    assert response.status_code == 302
    active = policies.active_version(truenas)
    assert active.number == 2 and active.created_by.username == "alice"
    assert exported() == preview
    assert staff_client.get(BUILDER + "export/").content.decode() == preview


def test_it_edits_one_tools_limits_and_argument_constraints(staff_client, truenas):
    url = BUILDER + "tools/cloud_backup_create/"
    page = staff_client.get(url).content.decode()
    assert 'aria-label="path pattern"' in page and 'aria-label="credentials minimum"' in page
    response = staff_client.post(url, {
        "action": "allow", "on_deny": "", "limit-0-counter": "", "limit-0-max": "5", "limit-0-window": "minute",
        "limit-0-scope": "grant", "arg-1-pattern": "^/mnt/tank/", "arg-1-presence": "required",
        "arg-2-minimum": "1", "arg-2-maximum": "10", "arg-6-presence": "forbidden"})
    assert response.status_code == 302
    rule = json.loads(draft_text(staff_client))["tools"]["cloud_backup_create"]
    assert rule == {
        "arguments": {"properties": {"path": {"pattern": "^/mnt/tank/"}, "credentials": {"minimum": 1, "maximum": 10}},
                      "required": ["path"], "forbidden": ["password"]},
        "limits": [{"counter": "cloud_backup_create_rate", "window": "minute", "max": 5, "scope": "grant"}]}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("limit-0-max", "0", "max must be"),
    ("limit-0-window", "fortnight", "window must be"),
    ("arg-1-pattern", "([", "does not compile"),
    ("conditions", "{not json", "not JSON"),
], ids=["max-zero", "bad-window", "bad-regex", "bad-json"])
def test_it_shows_a_validation_error_next_to_the_field_that_caused_it(staff_client, truenas, field, value, message):
    data = {"action": "allow", "limit-0-counter": "c", "limit-0-max": "3", "limit-0-window": "minute",
            "limit-0-scope": "grant", field: value}
    response = staff_client.post(BUILDER + "tools/cloud_backup_create/", data)
    body = response.content.decode()
    assert response.status_code == 400
    field_at = body.index(f'name="{field}"')
    error_at = body.index(message)
    assert 0 < error_at - field_at < 1500  # the message sits right after its field
    assert "cloud_backup_create" not in json.loads(draft_text(staff_client))["tools"]


def test_it_imports_a_file_into_the_draft_with_apply_policys_errors(staff_client, truenas, tmp_path):
    bad = b'{"version": "1", "default": "maybe", "tools": {"x": {"action": "nope"}}}'
    response = staff_client.post(BUILDER + "import/", {"file": SimpleUploadedFile("p.json", bad)})
    body = response.content.decode()
    path = tmp_path / "p.json"
    path.write_bytes(bad)
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("apply_policy", "truenas", str(path), stderr=err)
    for line in err.getvalue().splitlines():
        assert line.replace(str(path), "p.json").replace("'", "&#x27;") in body
    assert response.status_code == 400

    good = json.dumps({**seed_policy(), "default": "allow"}).encode()
    staff_client.post(BUILDER + "import/", {"file": SimpleUploadedFile("good.json", good)})
    assert json.loads(draft_text(staff_client))["default"] == "allow"


def test_it_shows_history_diffs_two_versions_and_rolls_back_as_a_new_version(staff_client, truenas):
    policies.apply(truenas, {**seed_policy(), "default": "allow"}, actor="test")
    body = staff_client.get(BUILDER + "versions/", {"a": 1, "b": 2}).content.decode()
    assert "default: deny → allow" in body and 'class="d-add">+  &quot;default&quot;: &quot;allow&quot;' in body
    response = staff_client.post(BUILDER + "versions/1/rollback/", {"confirm": "1"})
    assert response.status_code == 302
    active = policies.active_version(truenas)
    assert active.number == 3 and active.document == PolicyVersion.objects.get(server=truenas, number=1).document
    assert active.summary.startswith("rollback to v1")


def test_it_edits_a_grants_own_override_starting_from_the_servers_policy(staff_client, truenas):
    grant = create_grant("agent-a", [truenas], None).grant
    staff_client.post(BUILDER + "action/", {"tool": "pool_list", "set": "hide", "grant": "agent-a"}, **htmx())
    assert "pool_list" not in json.loads(draft_text(staff_client)).get("tools", {})  # the server's draft is apart
    staff_client.post(BUILDER + "save/", {"grant": "agent-a", "confirm": "1"})
    own = policies.active_version(truenas, grant)
    assert own.document["tools"]["pool_list"] == {"action": "hide"}
    assert own.document["risk"] == seed_policy()["risk"]
    assert exported(grant="agent-a") == canonical_json(own.document)
    assert policies.active_version(truenas).number == 1


def test_it_refuses_a_grant_that_does_not_cover_the_server(staff_client, truenas, server):
    create_grant("elsewhere", [server], None)
    assert staff_client.get(BUILDER, {"grant": "elsewhere"}).status_code == 404
