"""Upstream secrets are encrypted at rest and masked; grant tokens are stored as prefix + keyed hash."""

from __future__ import annotations

import pytest
from django.db import connection

from gateway import tokens, vault
from gateway.models import Server


def test_it_stores_env_and_headers_encrypted(server, other_server):
    with connection.cursor() as cursor:
        cursor.execute("SELECT env_sealed, headers_sealed FROM gateway_server")
        raw = " ".join(" ".join(row) for row in cursor.fetchall())
    assert "sk-live-0123456789abcdef" not in raw
    assert "upstream-secret-value-42" not in raw
    assert Server.objects.get(slug="files").env == {"FILES_API_KEY": "sk-live-0123456789abcdef"}
    assert Server.objects.get(slug="other").headers == {"Authorization": "Bearer upstream-secret-value-42"}


@pytest.mark.parametrize(("value", "shown"), [
    ("sk-live-0123456789abcdef", "•••cdef"),
    ("short", "•••"),
    ("elevenchars", "•••"),
    ("", "•••"),
], ids=["long-shows-last-4", "short-shows-nothing", "eleven-shows-nothing", "empty"])
def test_it_masks_secrets_to_at_most_the_last_four_characters(value, shown):
    assert vault.mask(value) == shown


def test_it_explains_what_to_do_when_the_key_changed(server, settings):
    settings.PORTCULLIS_SECRETS_KEY = "A" * 43 + "="
    with pytest.raises(vault.VaultError, match="PORTCULLIS_SECRETS_KEY changed"):
        _ = Server.objects.get(slug="files").env


def test_it_stores_only_a_prefix_and_a_keyed_digest_of_the_token(grant_that_may):
    grant, token = grant_that_may.grant, grant_that_may.token
    assert token.startswith("pcl_") and len(token) > 40
    assert grant.token_prefix == token[: tokens.PREFIX_LENGTH]
    assert grant.token_digest != token and token not in grant.token_digest
    assert tokens.matches(token, grant.token_digest)
    assert not tokens.matches(token + "x", grant.token_digest)


def test_it_ties_the_digest_to_the_secret_key(grant_that_may, settings):
    settings.SECRET_KEY = "another-secret-key-entirely-0123456789"
    assert not tokens.matches(grant_that_may.token, grant_that_may.grant.token_digest)
