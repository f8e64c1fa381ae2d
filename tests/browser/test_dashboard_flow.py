"""The dashboard end to end in chromium: sign in, register the TrueNAS simulator, build a policy by clicking
(bulk deny, a tool's limit and argument pattern, a glob rule, a hide entry), save, compare with export_policy,
roll back, create a grant and read its token once, filter the call log.

Screenshots of every page land in tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import io
import json
import sys
from importlib import resources

import pytest
from django.core.management import call_command
from django.utils import timezone

from gateway.models import Call, Grant, PolicyVersion, Server, Tool
from gateway.policy import parse_policy
from gateway.policy.editing import ToolFacts, effective_actions

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "browser-password-1"
SECRET = "sim-api-key-00aa11bb22cc33dd"
HOSTILE = ('<script>alert("x")</script><a href="javascript:alert(1)">click me</a>'
           '<img src=x onerror=alert(2)> report\u202etxt.exe\u202c end')


def htmx_done(page, action, path_part: str, method: str = "POST"):
    """Run `action` and wait (bounded) for the htmx response it causes, then for htmx to settle."""
    with page.expect_response(lambda r: path_part in r.url and r.request.method == method):
        action()
    page.wait_for_function("() => !document.querySelector('.htmx-request')")


def sign_in(page, base):
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")


def staff_signed_in(page, live_server, django_user_model, width: int = 1440, height: int = 900) -> str:
    """A staff user "admin" signed in at this viewport; returns the base URL."""
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True)
    page.set_viewport_size({"width": width, "height": height})
    sign_in(page, live_server.url)
    return live_server.url


def test_it_builds_saves_rolls_back_grants_and_reads_the_log(live_server, transactional_db, page, shoot,
                                                             django_user_model):
    base = live_server.url
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True, is_superuser=True)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(f"{base}/grants/")  # anonymous: sent to sign in
    assert "/login/" in page.url
    shoot(page, "01-sign-in")
    sign_in(page, base)
    shoot(page, "02-servers-empty")

    # Register the TrueNAS simulator through the form, then list its tools.
    page.get_by_role("link", name="Register a server").first.click()
    page.fill("input[name=slug]", "truenas")
    page.fill("input[name=name]", "TrueNAS (simulator)")
    page.check("input[name=transport][value=stdio]")
    page.fill("input[name=command]", f"{sys.executable} -m truenas_sim")
    page.fill("textarea[name=env]", f"TRUENAS_API_KEY={SECRET}")
    shoot(page, "03-register-server")
    page.get_by_role("button", name="Register", exact=True).click()
    page.wait_for_url(f"{base}/servers/truenas/")
    page.wait_for_selector("text=registered truenas and listed its 278 tools")  # listed at once
    page.get_by_role("button", name="Refresh tools").click()
    page.wait_for_selector("text=Refreshed: 0 new, 0 changed, 0 gone, 278 unchanged")
    assert SECRET not in page.content()
    shoot(page, "04-server-refreshed")

    # A hostile description stays text: no dialog, the markup and the bidi override visible.
    server = Server.objects.get(slug="truenas")
    Tool.objects.create(server=server, name="evil_report", description=HOSTILE, input_schema={"type": "object"},
                        definition={"name": "evil_report"}, definition_hash="1" * 64, approved_hash="1" * 64,
                        risk_category="read", risk_level="low", position=999)
    page.goto(f"{base}/servers/truenas/tools/evil_report/")
    description = page.text_content("pre.inert")
    assert '<script>alert("x")</script>' in description and "[U+202E]" in description
    assert page.locator("a[href^='javascript']").count() == 0 and not dialogs
    shoot(page, "05-tool-hostile-description")
    Tool.objects.filter(name="evil_report").delete()

    page.goto(f"{base}/servers/truenas/tools/")
    htmx_done(page, lambda: page.fill("#id_q", "cloud_backup"), "/tools/", "GET")
    assert page.locator("table.tools tbody tr").count() == 7
    shoot(page, "06-catalogue-search")

    # Start from the seed policy, imported from its file, saved as v1.
    seed = resources.files("gateway").joinpath("seed/truenas-policy.json")
    page.goto(f"{base}/servers/truenas/policy/")
    page.set_input_files("input[name=file]", str(seed))
    page.get_by_role("button", name="Import into the draft").click()
    page.wait_for_selector("text=imported truenas-policy.json")
    page.get_by_role("button", name="Save as new version").click()
    page.get_by_role("button", name="Save v1").click()
    page.wait_for_selector("text=activated version v1")

    # Bulk-deny every destructive tool: filter, select all shown, deny.
    htmx_done(page, lambda: page.select_option("#filters select[name=category]", "destructive"), "/policy/", "GET")
    destructive = set(Tool.objects.filter(server=server, risk_category="destructive").values_list("name", flat=True))
    assert page.locator("table.rules tbody tr").count() == len(destructive)
    htmx_done(page, lambda: page.get_by_role("button", name=f"Select all {len(destructive)} shown").click(),
              "/policy/select/")
    htmx_done(page, lambda: page.click(".bulk button.act-deny"), "/policy/bulk/")
    panel = page.locator("#bulk-panel")
    assert "Nothing changes for agents" in panel.inner_text()  # the seed denies the destructive tier already
    shoot(page, "07-builder-bulk-deny")
    panel.get_by_role("button", name="Close").click()
    assert page.locator("table.rules tbody .act-deny").count() == len(destructive)
    htmx_done(page, lambda: page.select_option("#filters select[name=category]", ""), "/policy/", "GET")
    assert page.locator("#selection-bar").inner_text().startswith(f"{len(destructive)} selected")  # kept
    htmx_done(page, lambda: page.get_by_role("button", name="Clear selection").click(), "/policy/select/")

    # cloud_backup_run: 5 per minute per grant.
    page.goto(f"{base}/servers/truenas/policy/tools/cloud_backup_run/")
    page.check("input[name=action][value=allow]")
    page.fill("input[name='limit-0-max']", "0")
    page.get_by_role("button", name="Update the draft").click()
    assert page.locator(".has-error, p.error").first.is_visible()  # max 0 is refused next to the field
    assert "max must be" in page.inner_text("form.rule-form")
    shoot(page, "08-tool-rule-validation-error")
    page.fill("input[name='limit-0-max']", "5")
    page.fill("input[name='limit-0-window']", "minute")
    page.select_option("select[name='limit-0-scope']", "grant")
    page.get_by_role("button", name="Update the draft").click()
    page.wait_for_selector("text=rule updated in the draft")

    # A pattern constraint on cloud_backup_create's path.
    page.goto(f"{base}/servers/truenas/policy/tools/cloud_backup_create/")
    page.check("input[name=action][value=allow]")
    page.fill("input[aria-label='path pattern']", "^/mnt/tank/")
    page.select_option("select[aria-label='path presence']", "required")
    shoot(page, "09-tool-rule-editor")
    page.get_by_role("button", name="Update the draft").click()
    page.wait_for_selector("text=rule updated in the draft")

    # A glob rule: every dataset_ tool at most 20 calls per minute per grant. The editor says what a pattern
    # matches while it is typed, and warns when it matches nothing (matching is case-sensitive).
    datasets = Tool.objects.filter(server=server, name__startswith="dataset_").count()
    page.fill("input[aria-label='new glob pattern']", "Dataset_*")
    page.get_by_role("button", name="Add a glob rule").click()
    page.wait_for_selector("text=matches no tool of truenas")
    shoot(page, "09a-glob-rule-matches-nothing")
    htmx_done(page, lambda: page.fill("#glob-key", "dataset_*"), "/policy/globs/matches/", "GET")
    assert page.inner_text("#glob-matches").startswith(f"Matches {datasets} tools")
    page.click("#glob-matches summary")
    page.check("input[name=action][value=allow]")
    page.fill("input[name='limit-0-max']", "20")
    page.fill("input[name='limit-0-window']", "minute")
    page.select_option("select[name='limit-0-scope']", "grant")
    shoot(page, "09b-glob-rule-editor")
    page.get_by_role("button", name="Update the draft").click()
    page.wait_for_selector("text=glob rule dataset_*: updated in the draft")
    card = page.locator("#glob-rules")
    assert "20 per minute per grant (dataset___rate)" in card.inner_text()
    card.locator("summary").first.click()
    card.scroll_into_view_if_needed()
    shoot(page, "09c-builder-glob-rules")

    # Hide every system_ tool; the rows and the live preview follow.
    page.click("#policy-wide > summary")
    page.fill("input[name='hide-0']", "system_*")
    with page.expect_response(lambda r: "/policy/preview/" in r.url):
        htmx_done(page, lambda: page.get_by_role("button", name="Apply to the draft").click(), "/policy/wide/")
    page.wait_for_function("() => !document.querySelector('.htmx-request')")
    systems = Tool.objects.filter(server=server, name__startswith="system_").count()
    assert f"hides {systems} tools" in page.inner_text("#policy-wide")
    assert '"system_*"' in page.text_content("#policy-json")
    page.locator("#policy-wide").scroll_into_view_if_needed()
    shoot(page, "09d-builder-policy-wide-hide")

    page.wait_for_selector("#policy-json", state="attached")
    preview = page.text_content("#policy-json")
    shoot(page, "10-builder-draft-preview")
    page.get_by_role("button", name="Save as new version").click()
    page.get_by_role("button", name="Save v2").click()
    page.wait_for_selector("text=activated version v2")

    out = io.StringIO()
    call_command("export_policy", "truenas", stdout=out)
    assert out.getvalue() == preview
    exported = json.loads(out.getvalue())
    # The destructive tier denies them (with its reason) and the bulk deny wrote no rule per tool; only the
    # dataset_* glob, which its editor showed deciding every dataset_ tool, takes some of them over.
    assert not destructive & set(exported["tools"])
    effective = effective_actions(parse_policy(exported), [ToolFacts(t.name, t.risk_category, t.risk_level)
                                                           for t in Tool.objects.filter(server=server)])
    assert all(effective[name].action in ("deny", "hide") for name in destructive if not name.startswith("dataset_"))
    assert exported["tools"]["cloud_backup_run"] == {
        "limits": [{"counter": "cloud_backup_run_rate", "window": "minute", "max": 5, "scope": "grant"}]}
    assert exported["tools"]["cloud_backup_create"]["arguments"] == {
        "properties": {"path": {"pattern": "^/mnt/tank/"}}, "required": ["path"]}
    assert exported["tools"]["dataset_*"] == {
        "limits": [{"counter": "dataset___rate", "window": "minute", "max": 20, "scope": "grant"}]}
    assert exported["hide"] == ["system_*"]

    # History: diff v1 → v2, roll back to v1 (a new version v3 equal to v1).
    page.goto(f"{base}/servers/truenas/policy/versions/?a=1&b=2")
    assert "cloud_backup_run" in page.inner_text("pre.diff")
    shoot(page, "11-versions-diff")
    page.get_by_role("button", name="Roll back to v1").click()
    page.wait_for_selector("text=Roll back to v1?")
    page.get_by_role("button", name="Roll back to v1").click()
    page.wait_for_selector("text=rolled back: v1 is active again as v3")
    v1, v3 = (PolicyVersion.objects.get(server=server, grant=None, number=n) for n in (1, 3))
    assert v3.is_active and v3.document == v1.document
    shoot(page, "12-versions-after-rollback")

    # A grant: the token is shown once, with the configurations filled in.
    page.goto(f"{base}/grants/new/")
    page.fill("input[name=name]", "browser-agent")
    page.check("input[name=servers]")
    page.fill("input[name=expires]", "30d")
    page.get_by_role("button", name="Create and show the token").click()
    token = page.text_content("#grant-token").strip()
    assert token.startswith("pcl_") and token in page.text_content(".configs")
    shoot(page, "13-grant-created-token-once")
    page.goto(f"{base}/grants/browser-agent/")
    assert token not in page.content()
    shoot(page, "14-grant-detail")
    page.goto(f"{base}/grants/")
    shoot(page, "15-grants")

    # The call log, filtered.
    grant = Grant.objects.get(name="browser-agent")
    now = timezone.now()
    for i, (tool, decision, outcome) in enumerate([
            ("pool_list", "allow", "ok"), ("dataset_delete", "deny", "refused"),
            ("cloud_backup_run", "allow", "ok"), ("pool_export", "deny", "refused")]):
        Call.objects.create(created_at=now - timezone.timedelta(seconds=10 - i), grant=grant, grant_name=grant.name,
                            server=server, server_slug="truenas", tool_name=tool, decision=decision, outcome=outcome,
                            arguments={"id": i, "password": "[redacted]"}, latency_ms=12.5 + i,
                            rule="/tools/dataset_delete" if decision == "deny" else "/risk/read",
                            reason="destructive tools are denied" if decision == "deny" else "")
    page.goto(f"{base}/calls/")
    assert page.locator("#call-rows tr.call").count() == 4
    htmx_done(page, lambda: page.select_option("select[name=decision]", "deny"), "/calls/", "GET")
    assert page.locator("#call-rows tr.call").count() == 2
    assert "decision=deny" in page.url
    shoot(page, "16-call-log-filtered")
    page.locator("#call-rows tr.call a").first.click()
    page.wait_for_selector("text=Matched rule")
    shoot(page, "17-call-detail")
    page.get_by_role("link", name="/tools/dataset_delete").click()
    page.wait_for_selector("h1:has-text('Rule for')")

    page.goto(f"{base}/servers/")
    shoot(page, "18-servers")
    assert not dialogs
    assert not [e for e in page.console_errors if "Content Security Policy" in e or "Refused" in e], \
        page.console_errors
