"""What is wide or cannot be undone asks first (issue 13, item 5): the action's POST without the confirmation
answers with what would change and changes nothing; with it, it acts. Checked on the server, whatever the page did."""

from __future__ import annotations

from gateway import policies
from gateway.models import PolicyVersion, Server
from tests.dashboard.fixtures import htmx

BUILDER = "/servers/truenas/policy/"


def test_save_says_how_many_changes_become_which_version_then_saves(staff_client, truenas):
    staff_client.post(BUILDER + "action/", {"tool": "pool_list", "set": "deny"}, **htmx())
    staff_client.post(BUILDER + "action/", {"tool": "disk_list", "set": "deny"}, **htmx())
    versions = PolicyVersion.objects.filter(server=truenas).count()
    asked = staff_client.post(BUILDER + "save/")
    body = asked.content.decode()
    assert asked.status_code == 200 and f"Save 2 changes as v{versions + 1}?" in body
    assert "decide every grant&#x27;s calls to truenas from the next call" in body and "pool_list" in body
    assert PolicyVersion.objects.filter(server=truenas).count() == versions
    assert staff_client.post(BUILDER + "save/", {"confirm": "1"}).status_code == 302
    assert PolicyVersion.objects.filter(server=truenas).count() == versions + 1


def test_discard_lists_what_is_lost_then_discards(staff_client, truenas):
    staff_client.post(BUILDER + "action/", {"tool": "pool_list", "set": "deny"}, **htmx())
    body = staff_client.post(BUILDER + "discard/").content.decode()
    assert "Discard the draft&#x27;s 1 change?" in body and "This cannot be undone" in body
    assert "1 change" in staff_client.get(BUILDER).content.decode()  # still there
    staff_client.post(BUILDER + "discard/", {"confirm": "1"})
    assert "Draft:" not in staff_client.get(BUILDER).content.decode()


def test_roll_back_shows_the_difference_and_how_to_undo(staff_client, truenas):
    active = policies.active_version(truenas)
    staff_client.post(BUILDER + "action/", {"tool": "pool_list", "set": "deny"}, **htmx())
    staff_client.post(BUILDER + "save/", {"confirm": "1"})
    new = policies.active_version(truenas)
    body = staff_client.post(BUILDER + f"versions/{active.number}/rollback/").content.decode()
    assert f"Roll back to v{active.number}?" in body and f"Undo: roll back to v{new.number}" in body
    assert "pool_list" in body
    assert policies.active_version(truenas).number == new.number
    staff_client.post(BUILDER + f"versions/{active.number}/rollback/", {"confirm": "1"})
    assert policies.active_version(truenas).document == active.document


def test_disabling_a_server_asks_enabling_does_not(staff_client, truenas):
    body = staff_client.post("/servers/truenas/enabled/", {"enabled": "0"}).content.decode()
    assert "Disable truenas?" in body and "Every call to its tools is refused" in body
    assert Server.objects.get(slug="truenas").enabled
    staff_client.post("/servers/truenas/enabled/", {"enabled": "0", "confirm": "1"})
    assert not Server.objects.get(slug="truenas").enabled
    staff_client.post("/servers/truenas/enabled/", {"enabled": "1"})
    assert Server.objects.get(slug="truenas").enabled
