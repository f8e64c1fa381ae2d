"""Redaction of secrets in arguments, errors and logs, by key name and by value pattern.

Applied before anything reaches the audit log, an approval, a log line or a page. Extra key names and value
patterns come from settings (PORTCULLIS_REDACT_KEYS / PORTCULLIS_REDACT_PATTERNS).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

REDACTED = "[REDACTED]"

# Case-insensitive substrings of a key name whose value is never stored.
DEFAULT_KEY_WORDS = (
    "password", "passwd", "passphrase", "secret", "token", "api_key", "apikey", "api-key", "authorization",
    "auth_header", "cookie", "private_key", "privatekey", "client_secret", "access_key", "secret_key",
    "credential", "session_key", "bearer",
)

# Values that look like credentials wherever they appear.
DEFAULT_VALUE_PATTERNS = (
    r"\b(?i:bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*",
    r"\bBasic\s+[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/])",  # HTTP basic credentials
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)",
    r"\bpcl_[A-Za-z0-9_\-]{16,}",  # our own grant tokens
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{40,}\b",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",  # Slack tokens
    r"\bsk-[A-Za-z0-9_\-]{20,}\b",  # API keys of the sk- family
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
    r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",  # user:password in URLs
)

MAX_DEPTH = 64  # deeper values are replaced rather than walked (arguments arrive already size-limited)


class Redactor:
    def __init__(self, key_words: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self.key_words = tuple(w.lower() for w in (*DEFAULT_KEY_WORDS, *key_words) if w)
        self.value_re = re.compile("|".join(f"(?:{p})" for p in (*DEFAULT_VALUE_PATTERNS, *patterns)))

    def secret_key(self, key: object) -> bool:
        lowered = str(key).lower()
        return any(word in lowered for word in self.key_words)

    def text(self, value: str) -> str:
        return self.value_re.sub(REDACTED, value)

    def value(self, value: object, depth: int = 0) -> object:
        """A redacted copy of a JSON value: secret keys' values replaced, secret-looking strings masked."""
        if depth > MAX_DEPTH:
            return REDACTED
        if isinstance(value, dict):
            return {k: (REDACTED if self.secret_key(k) else self.value(v, depth + 1)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, depth + 1) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


@lru_cache(maxsize=1)
def _configured() -> Redactor:
    from django.conf import settings

    return Redactor(settings.PORTCULLIS_REDACT_KEYS, settings.PORTCULLIS_REDACT_PATTERNS)


def redact(value: object) -> object:
    return _configured().value(value)


def redact_text(value: str) -> str:
    return _configured().text(value)


SERVER_VALUE_MIN = 5  # a shorter env/header value ("1", "on", "true") cannot be told from ordinary text
SERVER_WORD_MIN = 8  # the words of a value ("Bearer <token>") masked on their own from this length


def redact_server_text(server, text: str) -> str:
    """`redact_text`, and first every one of the server's own configured secrets masked wherever it appears: its
    environment values and header values (the tail of a stdio server's stderr may print them, an error may echo
    them), and the longer words of each (the token of "Bearer <token>")."""
    values: set[str] = set()
    for value in (*server.env.values(), *server.headers.values()):
        value = str(value)
        if len(value) >= SERVER_VALUE_MIN:
            values.add(value)
        values.update(word for word in value.split() if len(word) >= SERVER_WORD_MIN)
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return redact_text(text)
