"""Upstream secrets (stdio env values, HTTP headers) encrypted at rest with Fernet, and masked for display."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

MASK = "•••"


class VaultError(RuntimeError):
    pass


def _fernet() -> Fernet:
    try:
        return Fernet(settings.PORTCULLIS_SECRETS_KEY.encode())
    except (ValueError, TypeError):
        raise VaultError(
            "PORTCULLIS_SECRETS_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes)") from None


def seal(mapping: dict[str, str]) -> str:
    """Encrypt a str→str mapping; an empty mapping is stored as the empty string."""
    if not mapping:
        return ""
    return _fernet().encrypt(json.dumps(mapping, sort_keys=True).encode()).decode()


def unseal(token: str) -> dict[str, str]:
    if not token:
        return {}
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken:
        raise VaultError(
            "stored upstream secrets cannot be decrypted: PORTCULLIS_SECRETS_KEY changed since they were saved; "
            "restore the old key or enter the server's env/headers again"
        ) from None


def mask(value: str) -> str:
    """'•••' plus at most the last 4 characters, and only when the value is long enough to keep them secret."""
    if len(value) >= 12:
        return MASK + value[-4:]
    return MASK


def masked(mapping: dict[str, str]) -> dict[str, str]:
    return {key: mask(value) for key, value in mapping.items()}
