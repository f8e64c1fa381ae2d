"""Grant tokens: shown once, stored as a lookup prefix plus a keyed hash, compared in constant time."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from django.conf import settings

TOKEN_PREFIX = "pcl_"  # noqa: S105 - the public marker of our tokens, not a secret
PREFIX_LENGTH = len(TOKEN_PREFIX) + 8  # "pcl_" + 8 characters: indexed lookup key, safe to show


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def prefix_of(token: str) -> str:
    return token[:PREFIX_LENGTH]


def digest(token: str) -> str:
    # Keyed (HMAC) so a stolen database alone cannot be used to test guesses offline.
    return _digest(settings.SECRET_KEY, token)


@functools.lru_cache(maxsize=256)
def _digest(secret_key: str, token: str) -> str:
    # One request checks its token more than once (its session, its admission), and an agent sends the same token
    # on every request: the last few tokens' digests are kept (in memory only, as the tokens themselves are).
    return hmac.new(_key(secret_key), token.encode(), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=4)
def _key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"portcullis grant token v1", hashlib.sha256).digest()


def matches(token: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(token), stored_digest)


def looks_like_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and 20 <= len(token) <= 200 and token.isascii()
