"""Settings come from the environment; a bad value stops the start with a message that names the variable."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from config.env import ConfigError, database_from_url, env_bool, env_int, local_keys, redis_from_url

ROOT = Path(__file__).resolve().parent.parent


def test_it_uses_sqlite_in_wal_mode_when_database_url_is_unset(tmp_path):
    db = database_from_url("DATABASE_URL", None, tmp_path / "x.sqlite3")
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]


def test_it_parses_a_postgres_url_with_escaped_password(tmp_path):
    db = database_from_url("DATABASE_URL", "postgres://u:p%40ss@db.local:5433/portcullis", tmp_path / "x")
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "portcullis", "u", "p@ss", "db.local", "5433")


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgres://u@h:notaport/db", "postgres://u@h:5432/", "sqlite://"],
                         ids=["unsupported-scheme", "bad-port", "no-database", "sqlite-no-path"])
def test_it_rejects_a_bad_database_url_naming_the_variable(tmp_path, url):
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        database_from_url("DATABASE_URL", url, tmp_path / "x")


def test_it_rejects_a_redis_url_of_another_scheme():
    with pytest.raises(ConfigError, match="REDIS_URL"):
        redis_from_url("REDIS_URL", "http://127.0.0.1:6379")
    assert redis_from_url("REDIS_URL", "redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_it_rejects_booleans_and_integers_it_cannot_read(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ConfigError, match="DEBUG"):
        env_bool("DEBUG", False)
    monkeypatch.setenv("PORTCULLIS_DEFAULT_TIMEOUT_S", "ten")
    with pytest.raises(ConfigError, match="PORTCULLIS_DEFAULT_TIMEOUT_S"):
        env_int("PORTCULLIS_DEFAULT_TIMEOUT_S", 60)


def test_it_generates_local_keys_once_with_mode_0600(tmp_path):
    first = local_keys(tmp_path)
    path = tmp_path / "secret-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_keys(tmp_path) == first
    assert set(first) == {"SECRET_KEY", "PORTCULLIS_SECRETS_KEY"}


def test_it_refuses_a_key_file_others_can_read(tmp_path):
    local_keys(tmp_path)
    os.chmod(tmp_path / "secret-keys.json", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        local_keys(tmp_path)


def test_manage_py_stops_with_a_message_naming_the_bad_variable(tmp_path):
    env = {**os.environ, "DATABASE_URL": "mysql://root@localhost/db", "PORTCULLIS_STATE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "configuration error: DATABASE_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_manage_py_says_in_the_log_that_it_generated_keys(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "PORTCULLIS_SECRETS_KEY")}
    env["PORTCULLIS_STATE_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "generated them into" in proc.stderr
    assert (tmp_path / "secret-keys.json").exists()


def test_the_process_log_can_be_json_lines():
    """PORTCULLIS_LOG_FORMAT=json: every line of a real process's log is one JSON object (issue 17)."""
    env = {**os.environ, "PORTCULLIS_LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    code = ("import django, logging; django.setup(); "
            "logging.getLogger('portcullis.test').warning('held %s', 'echo'); "
            "logging.getLogger('portcullis.test').error('boom', exc_info=ZeroDivisionError('x'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"})
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert [(e["level"], e["logger"], e["message"]) for e in lines][-2:] == [
        ("WARNING", "portcullis.test", "held echo"), ("ERROR", "portcullis.test", "boom")]
    assert "ZeroDivisionError: x" in lines[-1]["exception"] and lines[-1]["time"].endswith("+00:00")


def test_an_unknown_log_format_stops_the_start():
    env = {**os.environ, "PORTCULLIS_LOG_FORMAT": "xml"}
    proc = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "PORTCULLIS_LOG_FORMAT: 'xml' is not a log format" in proc.stderr


def test_an_unknown_http_server_stops_the_start_naming_the_choices():
    env = {**os.environ, "PORTCULLIS_SERVER": "nginx"}
    proc = subprocess.run([sys.executable, "-m", "config.serve", "-b", "127.0.0.1", "-p", "1",
                           "config.asgi:application"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "configuration error: PORTCULLIS_SERVER='nginx': choose daphne or uvicorn"
