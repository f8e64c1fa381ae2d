"""The builder's preview replays a draft against the call log, says what changes in behaviour, and saving asks for
a change note that the history shows (issue 15, part 2); apply_policy --replay prints the same replay."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from gateway import calls, policies
from gateway.grants import create_grant
from gateway.models import PolicyVersion
from tests.dashboard.fixtures import *  # noqa: F403
from tests.dashboard.fixtures import htmx

B = "/servers/truenas/policy/"


@pytest.fixture
def backups(truenas):
    """Fifteen cloud_backup_run calls in one minute under the seed policy: ten ran, five hit the limit."""
    token = create_grant("agent", [truenas], None).token
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=5)
    for i in range(15):
        calls.admit(token, truenas, "cloud_backup_run", {"id": 1}, start + timedelta(seconds=i))
    calls.admit(token, truenas, "pool_list", {}, start + timedelta(seconds=20))
    return truenas


def test_the_preview_replays_a_tighter_limit_against_the_log(staff_client, backups):
    staff_client.post(B + "tools/cloud_backup_run/", {"action": "allow", "limit-0-max": "5",
                                                      "limit-0-window": "minute", "limit-0-scope": "grant"})
    preview = staff_client.get(B + "preview/", **htmx()).content.decode()
    assert "cloud_backup_run: limited 10 per minute per grant → limited 5 per minute per grant" in preview
    assert "Replay the draft" in preview
    body = staff_client.get(B + "replay/", {"last": "1000"}, **htmx()).content.decode()
    assert "16 recorded calls replayed: 5 would be decided differently" in body
    assert "5 allowed → refused by a limit" in body and body.count('href="/calls/') == 5


def test_a_time_range_and_its_mistakes(staff_client, backups):
    now = timezone.now()
    body = staff_client.get(B + "replay/", {"since": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
                                            "until": now.strftime("%Y-%m-%dT%H:%M")}, **htmx()).content.decode()
    assert "16 recorded calls replayed: 0 would be decided differently" in body
    body = staff_client.get(B + "replay/", {"until": now.strftime("%Y-%m-%dT%H:%M")}, **htmx()).content.decode()
    assert "give the start of the range too" in body


def test_saving_asks_for_a_note_and_the_history_shows_it(staff_client, backups):
    staff_client.post(B + "default/", {"default": "allow"})
    question = staff_client.post(B + "save/").content.decode()
    assert "Why this change?" in question and "What changes" not in question
    assert "tools: deny → allow" in question  # the behaviour, before the JSON pointers
    staff_client.post(B + "save/", {"confirm": "1", "note": "reads and more for the migration week"})
    assert PolicyVersion.objects.get(server=backups, is_active=True).note == "reads and more for the migration week"
    history = staff_client.get(B + "versions/").content.decode()
    assert "“reads and more for the migration week”" in history


def test_apply_policy_replays_before_applying(backups, tmp_path):
    document = {**policies.active_version(backups).document}
    document["tools"] = {"cloud_backup_run": {"limits": [
        {"counter": "cloud_backup_run_rate", "window": "minute", "max": 20, "scope": "grant"}]}}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document))
    out = io.StringIO()
    call_command("apply_policy", "truenas", str(path), "--replay", "100", "--check", stdout=out)
    text = out.getvalue()
    assert "16 recorded calls replayed: 5 would be decided differently" in text
    assert "5 refused by a limit → allowed" in text and "check only: nothing was applied" in text
    call_command("apply_policy", "truenas", str(path), "--note", "backups need room", stdout=io.StringIO())
    assert policies.active_version(backups).note == "backups need room"
