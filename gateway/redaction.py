"""Redaction of secrets in arguments, errors and logs.

Applied before anything reaches the audit log, an approval, a log line or a page. A value is a secret when
- its key names one: a word anywhere in it (password, passphrase, secret, token, ...) or as its last word
  (`key`, `pass`, `pwd`, `community`, `psk`: `encryption_key`, `monpwd`, a raw ZFS `key`; not `key_type`);
- it is the `value` of a name/value pair whose name is a secret key ([{"name": "DB_PASSWORD", "value": ...}]);
- the tool's input schema marks its field `format: password` or `writeOnly: true` (`schema_secret_paths`);
- the operator listed its field for the tool in PORTCULLIS_REDACT_FIELDS (`tool-glob:dotted.path`, `[]` for the
  items of an array: `app_*:values.env[].value`);
- it looks like a credential wherever it appears (value patterns: bearer tokens, private keys, our own tokens...).
Extra key words and value patterns come from settings (PORTCULLIS_REDACT_KEYS / PORTCULLIS_REDACT_PATTERNS).
"""

from __future__ import annotations

import fnmatch
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

# Key names whose last word is one of these hold a secret (`encryption_key`, `monpwd`, `community`).
LAST_WORDS = ("key", "pass", "pwd", "community", "psk")
NAME_KEYS = ("name", "key", "variable")  # the name half of a name/value pair
ITEMS = "[]"  # a path step into every item of an array

KNOWN_KEYS_MAX = 4096  # key names remembered per redactor (arguments of every tool; cleared when full)
KNOWN_KEY_LENGTH = 100  # longer key names are not remembered
MAX_DEPTH = 64  # deeper values are replaced rather than walked (arguments arrive already size-limited)


class Redactor:
    def __init__(self, key_words: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self.key_words = tuple(w.lower() for w in (*DEFAULT_KEY_WORDS, *key_words) if w)
        self.value_re = re.compile("|".join(f"(?:{p})" for p in (*DEFAULT_VALUE_PATTERNS, *patterns)))
        self._known: dict[str, bool] = {}  # key name → secret_key(): a tool's few argument names, decided once

    def secret_key(self, key: object) -> bool:
        name = str(key)
        known = self._known.get(name)
        if known is None:
            known = self._secret_key(name)
            if len(name) <= KNOWN_KEY_LENGTH:  # an agent's made-up long names are decided, never kept
                if len(self._known) >= KNOWN_KEYS_MAX:
                    self._known.clear()
                self._known[name] = known
        return known

    def _secret_key(self, key: str) -> bool:
        lowered = key.lower()
        if any(word in lowered for word in self.key_words):
            return True
        words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()) if w]
        return bool(words) and (words[-1] in LAST_WORDS or words[-1].endswith("pwd"))

    def text(self, value: str) -> str:
        return self.value_re.sub(REDACTED, value)

    def value(self, value: object, paths: frozenset[tuple[str, ...]] = frozenset(), depth: int = 0,
              at: tuple[str, ...] = ()) -> object:
        """A redacted copy of a JSON value: secret keys' values, the values of secret name/value pairs and the
        values at `paths` (from the tool's schema and the settings) replaced, secret-looking strings masked."""
        if depth > MAX_DEPTH or (paths and at in paths):
            return REDACTED
        if isinstance(value, dict):
            pair_name = next((value[k] for k in NAME_KEYS if isinstance(value.get(k), str)), None)
            secret_pair = pair_name is not None and "value" in value and self.secret_key(pair_name)
            return {k: (REDACTED if self.secret_key(k) or (secret_pair and k == "value")
                        else self.value(v, paths, depth + 1, (*at, str(k)))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, paths, depth + 1, (*at, ITEMS)) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


def schema_secret_paths(schema: object, at: tuple[str, ...] = (), depth: int = 0) -> frozenset[tuple[str, ...]]:
    """The paths of the fields a tool's input schema marks as secret (`format: password`, `writeOnly: true`)."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return frozenset()
    found: set[tuple[str, ...]] = set()
    if at and (schema.get("format") == "password" or schema.get("writeOnly") is True):
        found.add(at)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            found |= schema_secret_paths(sub, (*at, str(name)), depth + 1)
    if isinstance(schema.get("items"), dict):
        found |= schema_secret_paths(schema["items"], (*at, ITEMS), depth + 1)
    return frozenset(found)


def configured_paths(tool_name: str) -> frozenset[tuple[str, ...]]:
    """The fields PORTCULLIS_REDACT_FIELDS lists for this tool (entries `tool-glob:dotted.path`)."""
    from django.conf import settings

    found = set()
    for entry in getattr(settings, "PORTCULLIS_REDACT_FIELDS", ()):
        pattern, _, dotted = entry.partition(":")
        if dotted and fnmatch.fnmatchcase(tool_name, pattern.strip()):
            steps: list[str] = []
            for part in dotted.strip().split("."):
                steps.append(part.removesuffix(ITEMS))
                if part.endswith(ITEMS):
                    steps.append(ITEMS)
            found.add(tuple(steps))
    return frozenset(found)


@lru_cache(maxsize=1)
def _configured() -> Redactor:
    from django.conf import settings

    return Redactor(settings.PORTCULLIS_REDACT_KEYS, settings.PORTCULLIS_REDACT_PATTERNS)


def redact(value: object, paths: frozenset[tuple[str, ...]] = frozenset()) -> object:
    return _configured().value(value, paths)


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
