"""A dispatcher in the dashboard (issue 14): the detected shape is suggested on the tool's page and a person
confirms it; its actions get rows in the builder and pages of their own; actions first seen in calls wait on the
dispatcher's page for a person to accept or reject; governing it as one tool again asks first."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from gateway import calls, policies
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import Server, ServerChange, Tool
from tests.dashboard.fixtures import *  # noqa: F403
from tests.dashboard.fixtures import seed_policy

UMBRELLA = {"name": "truenas", "description": "Run any TrueNAS action.",
            "inputSchema": {"type": "object", "properties": {"category": {"type": "string"},
                                                             "action": {"type": "string"},
                                                             "params": {"type": "object"}}}}
PAGE = "/servers/nas/tools/truenas/"
DECLARE = {"action": "/action", "match": "/category", "params": "/params", "source": "truenas", "actions": ""}


@pytest.fixture
def nas(db) -> Server:
    server = Server.objects.create(slug="nas", name="NAS", transport=Server.Transport.STDIO,
                                   command=["python", "-m", "truenas_sim", "--umbrella"])
    sync_tools(server, [UMBRELLA], timezone.now())
    policies.apply(server, seed_policy(), actor="test")
    return server


def test_the_detected_shape_is_suggested_and_a_person_confirms_it(staff_client, nas):
    page = staff_client.get(PAGE).content.decode()
    assert "This tool looks like a dispatcher" in page and 'value="/action"' in page and 'value="/params"' in page
    assert not Tool.objects.filter(server=nas, via__isnull=False).exists()  # nothing until a person confirms
    response = staff_client.post(PAGE + "dispatcher/", DECLARE, follow=True)
    text = response.content.decode()
    assert "governed by action: 278 actions in the catalogue" in text and "A dispatcher: governed by action" in text
    assert Tool.objects.get(server=nas, name="truenas").dispatch["match"] == ["/category"]
    assert ServerChange.objects.filter(server=nas, summary__contains="declared a dispatcher").exists()


def test_its_actions_have_rows_in_the_builder_and_pages_of_their_own(staff_client, nas):
    staff_client.post(PAGE + "dispatcher/", DECLARE)
    builder = staff_client.get("/servers/nas/policy/").content.decode()
    assert builder.count("via truenas") == 278 and ">dispatcher<" in builder
    action = staff_client.get("/servers/nas/tools/cloud_backup_run/").content.decode()
    assert "An action of" in action and "/action = &quot;cloud_backup_run&quot;" in action
    assert "/category = &quot;data_protection&quot;" in action


def test_a_wrong_shape_is_refused_with_what_to_fix(staff_client, nas):
    response = staff_client.post(PAGE + "dispatcher/", {**DECLARE, "action": "action"})
    assert response.status_code == 400 and "is not a JSON pointer to an argument" in response.content.decode()
    response = staff_client.post(PAGE + "dispatcher/", {**DECLARE, "params": "/params", "match": "/params/x"})
    assert response.status_code == 400 and "inside the action&#x27;s own arguments" in response.content.decode()
    response = staff_client.post(PAGE + "dispatcher/", {**DECLARE, "actions": "{not json"})
    assert response.status_code == 400 and "not JSON" in response.content.decode()
    assert Tool.objects.get(server=nas, name="truenas").dispatch is None


def test_pasted_actions_are_added(staff_client, nas):
    pasted = json.dumps([{"name": "backup_now", "match": {"/category": "x"}, "description": "Back up now."},
                         {"name": "bad name"}])
    response = staff_client.post(PAGE + "dispatcher/", {**DECLARE, "source": "", "actions": pasted}, follow=True)
    assert "1 added" in response.content.decode() and "bad name" in response.content.decode()
    assert Tool.objects.get(server=nas, name="backup_now").via.name == "truenas"


def test_an_action_first_seen_in_a_call_waits_for_a_person(staff_client, nas, reader_client):
    staff_client.post(PAGE + "dispatcher/", DECLARE)
    token = create_grant("agent", [nas], None).token
    admission = calls.admit(token, nas, "truenas", {"category": "x", "action": "made_up"}, timezone.now())
    assert not admission.forward
    page = staff_client.get(PAGE).content.decode()
    assert "Actions waiting for your review (1)" in page and "made_up" in page
    assert reader_client.post("/servers/nas/tools/made_up/review/", {"op": "accept"}).status_code == 403
    staff_client.post("/servers/nas/tools/made_up/review/", {"op": "accept"})
    assert Tool.objects.get(name="made_up").held_reason == ""
    calls.admit(token, nas, "truenas", {"category": "x", "action": "other_made_up"}, timezone.now())
    staff_client.post("/servers/nas/tools/other_made_up/review/", {"op": "reject"})
    rejected = Tool.objects.get(name="other_made_up")
    assert rejected.gone_at is not None and "rejected" in rejected.held_reason
    again = calls.admit(token, nas, "truenas", {"category": "x", "action": "other_made_up"}, timezone.now())
    assert not again.forward and "no longer in the gateway's catalogue" in again.message


def test_governing_it_as_one_tool_again_asks_first(staff_client, nas):
    staff_client.post(PAGE + "dispatcher/", DECLARE)
    question = staff_client.post(PAGE + "dispatcher/", {"op": "off"}).content.decode()
    assert "Govern truenas as one tool again?" in question and "278 actions stop applying" in question
    assert Tool.objects.get(server=nas, name="truenas").dispatch is not None
    staff_client.post(PAGE + "dispatcher/", {"op": "off", "confirm": "1"})
    assert Tool.objects.get(server=nas, name="truenas").dispatch is None
    assert not Tool.objects.filter(server=nas, via__isnull=False, gone_at__isnull=True).exists()


def test_the_call_log_says_which_dispatcher_a_call_came_through(staff_client, nas):
    staff_client.post(PAGE + "dispatcher/", DECLARE)
    token = create_grant("agent", [nas], None).token
    calls.admit(token, nas, "truenas", {"category": "storage", "action": "dataset_delete",
                                        "params": {"id": "tank"}}, timezone.now())
    log = staff_client.get("/calls/").content.decode()
    assert "dataset_delete" in log and "via truenas" in log
    assert "dataset_delete" in staff_client.get(PAGE).content.decode()  # its latest calls
