"""Project-level contracts: migrations match the models, pages need sign-in, security headers are on."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_migrations_match_the_models():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_the_dashboard_sends_anonymous_visitors_to_sign_in(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_sign_in_page_is_framed_by_nobody_and_carries_a_csrf_token(client, db):
    response = client.get("/login/")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert b"csrfmiddlewaretoken" in response.content


def test_a_signed_in_user_sees_servers_with_their_gateway_url_and_no_secrets(client, django_user_model, server):
    user = django_user_model.objects.create_user("reader", password="a-long-password-1")
    client.force_login(user)
    response = client.get("/servers/")
    assert response.status_code == 200
    assert b"/mcp/files/" in response.content
    assert b"sk-live-0123456789abcdef" not in response.content
