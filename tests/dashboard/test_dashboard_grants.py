"""Grants: created with the token shown exactly once (with configurations), covered servers, expiry, revoke."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from gateway import tokens
from gateway.grants import create_grant
from gateway.models import Grant


def test_it_shows_the_token_once_with_the_configurations_filled_in(staff_client, truenas, http_server):
    response = staff_client.post("/grants/new/", {"name": "ci-agent", "servers": [truenas.pk, http_server.pk],
                                                  "expires": "30d"}, follow=True)
    assert response.redirect_chain == [("/grants/ci-agent/created/", 302)]
    body = response.content.decode()
    token = body.split('id="grant-token">')[1].split("<")[0]
    grant = Grant.objects.get(name="ci-agent")
    assert tokens.matches(token, grant.token_digest)
    assert "no-store" in response["Cache-Control"]
    assert f"Authorization: Bearer {token}" in body and "/mcp/truenas/" in body and "/mcp/remote/" in body
    assert abs(grant.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    for page in ("/grants/", "/grants/ci-agent/"):
        assert token not in staff_client.get(page).content.decode()
    again = staff_client.get("/grants/ci-agent/created/", follow=True).content.decode()  # a reload: never again
    assert token not in again and "was shown once" in again
    assert Grant.objects.filter(name="ci-agent").count() == 1


def test_it_says_what_is_wrong_with_a_grant(staff_client, truenas):
    create_grant("taken", [truenas], None)
    body = staff_client.post("/grants/new/", {"name": "taken", "servers": [truenas.pk], "expires": "soon"}
                             ).content.decode()
    assert "not a duration" in body and "90m, 12h, 30d, 2w" in body
    body = staff_client.post("/grants/new/", {"name": "taken", "servers": [truenas.pk]}).content.decode()
    assert "already exists" in body
    body = staff_client.post("/grants/new/", {"name": "fresh", "servers": []}).content.decode()
    assert "This field is required." in body
    assert not Grant.objects.filter(name="fresh").exists()


def test_it_lists_state_expiry_and_last_use(staff_client, truenas):
    used = create_grant("used", [truenas], timezone.now() + timedelta(days=1)).grant
    Grant.objects.filter(pk=used.pk).update(last_used_at=timezone.now() - timedelta(hours=2))
    create_grant("old", [truenas], timezone.now() - timedelta(days=1))
    body = staff_client.get("/grants/").content.decode()
    assert "</svg>active" in body and "</svg>expired" in body and "2\xa0hours ago" in body


def test_revoking_asks_for_the_grants_name_first_and_then_shows_it_revoked(staff_client, truenas):
    create_grant("gone", [truenas], None)
    asked = staff_client.post("/grants/gone/revoke/").content.decode()
    assert "Revoke grant gone?" in asked and "every call it makes to truenas is refused" in asked
    assert "This cannot be undone" in asked and 'name="confirm_name"' in asked
    wrong = staff_client.post("/grants/gone/revoke/", {"confirm": "1", "confirm_name": "gone2"})
    assert wrong.status_code == 400 and "type gone exactly to confirm" in wrong.content.decode()
    assert Grant.objects.get(name="gone").revoked_at is None
    response = staff_client.post("/grants/gone/revoke/", {"confirm": "1", "confirm_name": "gone"}, follow=True)
    assert Grant.objects.get(name="gone").revoked_at is not None
    assert "its next call is refused" in response.content.decode() and "</svg>revoked" in response.content.decode()


def test_it_links_each_covered_server_to_the_grants_own_override(staff_client, truenas):
    create_grant("mine", [truenas], None)
    body = staff_client.get("/grants/mine/").content.decode()
    assert "the server&#x27;s policy v1" in body or "the server's policy v1" in body
    assert "/servers/truenas/policy/?grant=mine" in body
