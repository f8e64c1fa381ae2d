"""Settings read from the environment by small helpers that fail loudly and name the variable."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("portcullis.settings")


class ConfigError(RuntimeError):
    """A setting from the environment is unusable; the message names the variable."""


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(name: str, url: str | None, sqlite_path: Path) -> dict:
    """Django DATABASES['default'] from a URL: postgres://user:pass@host:port/db or sqlite:///path."""
    if not url:
        return _sqlite(sqlite_path)
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path or path == "/":
            raise ConfigError(f"{name}={url!r}: write sqlite:////absolute/path.sqlite3 or sqlite:///relative.sqlite3")
        # sqlite:///rel.sqlite3 → "rel.sqlite3"; sqlite:////abs/x.sqlite3 → "/abs/x.sqlite3"
        return _sqlite(Path(path[1:]))
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        raise ConfigError(f"{name}: unsupported scheme {parts.scheme!r}; use postgres://user:password@host:5432/dbname")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ConfigError(f"{name}: the URL names no database; use postgres://user:password@host:5432/dbname")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name}: the port is not a number") from None
    options = dict(parse_qsl(parts.query))
    # The hot path's statements are prepared (gateway/calls/prepared.py asks for it per statement; psycopg refuses while
    # the threshold is None, Django's default) and a generic plan is what saves their planning. Django's own
    # queries use client-side binding and are never prepared, so neither setting changes them.
    options.setdefault("prepare_threshold", 1_000_000_000)
    generic = "-c plan_cache_mode=force_generic_plan"
    options["options"] = f"{options['options']} {generic}" if options.get("options") else generic
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": dbname,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port or ""),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
    }


def _sqlite(path: Path) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        # WAL lets readers go on while one writer commits; synchronous=NORMAL is durable across a
        # process crash (not a power cut) and costs a fraction of FULL's fsync per commit.
        # IMMEDIATE makes a transaction take the write lock at BEGIN, so two processes reserving
        # counters serialise instead of failing with "database is locked" on lock upgrade.
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
        },
        # Per process: two test runs at once (a developer and a helper) must not share a test database.
        "TEST": {"NAME": str(path.with_name(f"{path.stem}-test-{os.getpid()}.sqlite3"))},
    }


def redis_from_url(name: str, url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{name}={url!r}: use redis://host:6379/0")
    return url


def local_keys(state_dir: Path) -> dict[str, str]:
    """Keys for a developer machine: generated once into a 0600 file outside git, then reused."""
    path = state_dir / "secret-keys.json"
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is unreadable ({exc}); delete it to generate new keys") from None
    keys = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "PORTCULLIS_SECRETS_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(keys, handle)
    log.warning(
        "SECRET_KEY and PORTCULLIS_SECRETS_KEY were not set: generated them into %s (mode 0600). "
        "Set both in the environment on a real deployment; losing the file makes stored upstream secrets unreadable.",
        path,
    )
    return keys


def secret_setting(name: str, keys_file: dict[str, str] | None) -> str:
    value = os.environ.get(name)
    if value:
        return value
    if keys_file is None or name not in keys_file:
        raise ConfigError(f"{name} is not set")
    return keys_file[name]
