"""Arguments are redacted by key name and by value pattern before they are stored or logged."""

from __future__ import annotations

import pytest

from gateway.redaction import REDACTED, Redactor, redact

SECRETS_BY_VALUE = [
    ("Bearer abcdefghijklmnop0123", "bearer"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n-----END OPENSSH PRIVATE KEY-----", "private-key"),
    ("pcl_abcdefghijklmnopqrstuvwxyz012345", "grant-token"),
    ("AKIAIOSFODNN7EXAMPLE", "aws-key-id"),
    ("ghp_" + "a1" * 18, "github-token"),
    ("sk-" + "x" * 40, "sk-key"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt"),
]


@pytest.mark.parametrize(("secret", "kind"), SECRETS_BY_VALUE, ids=[k for _, k in SECRETS_BY_VALUE])
def test_it_masks_secret_looking_values_anywhere(secret, kind):
    out = redact({"note": f"use {secret} please", "nested": [{"x": secret}]})
    assert secret not in repr(out)
    assert REDACTED in out["note"] and out["nested"][0]["x"] == REDACTED


@pytest.mark.parametrize("key", ["password", "db_password", "Secret", "api_key", "APIKEY", "Authorization",
                                 "refresh_token", "private_key", "client_secret", "aws_secret_access_key"])
def test_it_drops_values_under_secret_key_names(key):
    out = redact({key: "hunter2", "path": "/mnt/tank"})
    assert out == {key: REDACTED, "path": "/mnt/tank"}


def test_it_masks_credentials_inside_urls():
    out = redact({"remote": "https://alice:s3cretpw@git.example.com/repo.git"})
    assert "s3cretpw" not in out["remote"] and "git.example.com/repo.git" in out["remote"]


def test_it_keeps_ordinary_values_and_types():
    value = {"dataset": "tank/media", "recursive": True, "quota": 2199023255552, "tags": ["a", "b"], "x": None}
    assert redact(value) == value


def test_it_takes_extra_key_names_and_patterns_from_configuration():
    redactor = Redactor(key_words=["pin"], patterns=[r"\bACME-[0-9]{6}\b"])
    assert redactor.value({"pin_code": "1234", "msg": "ticket ACME-123456"}) == {
        "pin_code": REDACTED, "msg": f"ticket {REDACTED}"}


def test_it_stops_walking_absurdly_deep_values():
    deep: object = "Bearer abcdefghijklmnop0123"
    for _ in range(200):
        deep = [deep]
    assert "abcdefghijklmnop" not in repr(redact(deep))


def test_a_key_decided_once_is_decided_the_same_and_the_memory_of_names_stays_bounded():
    from gateway.redaction import KNOWN_KEY_LENGTH, KNOWN_KEYS_MAX, Redactor

    redactor = Redactor()
    for _ in range(2):  # the second time from what it remembers
        assert redactor.secret_key("apiToken") and redactor.secret_key("encryption_key")
        assert not redactor.secret_key("key_type") and not redactor.secret_key("path")
    for i in range(KNOWN_KEYS_MAX + 10):
        redactor.secret_key(f"field_{i}")
    redactor.secret_key("x" * (KNOWN_KEY_LENGTH + 1) + "_password")
    assert len(redactor._known) <= KNOWN_KEYS_MAX
    assert all(len(name) <= KNOWN_KEY_LENGTH for name in redactor._known)
    assert redactor.secret_key("x" * (KNOWN_KEY_LENGTH + 1) + "_password")
