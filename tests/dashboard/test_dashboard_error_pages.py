"""Error pages in the product's look (issue 13, item 13): a 404 inside the dashboard's layout with a way back, a 500
that needs no database; and web errors in the product's words, not a management command's."""

from __future__ import annotations

from django.test import Client

from gateway.grants import create_grant


def test_a_missing_page_is_a_styled_404_with_a_way_back(staff_client, truenas):
    response = staff_client.get("/servers/no-such-server/")
    body = response.content.decode()
    assert response.status_code == 404
    assert "portcullis.css" in body and "Nothing here" in body and 'href="/"' in body


def test_a_server_error_is_a_styled_500(settings, staff, monkeypatch):
    from dashboard.views import calls

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(calls, "render", broken)  # the call log's view fails while rendering
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    client.force_login(staff)
    response = client.get("/calls/")
    body = response.content.decode()
    assert response.status_code == 500
    assert "portcullis.css" in body and "Something went wrong" in body and "boom" not in body


def test_a_taken_grant_name_is_said_in_the_products_words(staff_client, truenas):
    create_grant("taken", [truenas], None)
    body = staff_client.post("/grants/new/", {"name": "taken", "servers": [truenas.pk]}).content.decode()
    assert "already exists" in body and "revoke_grant" not in body and "revoke that grant first" in body
