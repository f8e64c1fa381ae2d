"""Portcullis settings. Everything that varies comes from the environment (see README.md, "Configuration")."""

from __future__ import annotations

import os
from ipaddress import ip_network
from pathlib import Path
from urllib.parse import urlsplit

from config.env import (
    ConfigError,
    database_from_url,
    env_bool,
    env_int,
    env_list,
    env_str,
    local_keys,
    redis_from_url,
    secret_setting,
)

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(env_str("PORTCULLIS_STATE_DIR", str(BASE_DIR / "var")))

_need_local_keys = not (os.environ.get("SECRET_KEY") and os.environ.get("PORTCULLIS_SECRETS_KEY"))
_keys_file = local_keys(STATE_DIR) if _need_local_keys else None
SECRET_KEY = secret_setting("SECRET_KEY", _keys_file)
# Fernet key (32 url-safe base64 bytes) that encrypts upstream env values and headers at rest.
PORTCULLIS_SECRETS_KEY = secret_setting("PORTCULLIS_SECRETS_KEY", _keys_file)

DEBUG = env_bool("DEBUG", False)
# The address agents and browsers use. Printed client configurations start with it, and its host and origin are
# always accepted. Default: the address being served (config/serve.py sets PORTCULLIS_SERVED_URL from -b/-p, and
# `make run PORT=N` passes it to the demo's printout too).
PORTCULLIS_PUBLIC_URL = (env_str("PORTCULLIS_PUBLIC_URL", "")
                         or env_str("PORTCULLIS_SERVED_URL", "http://127.0.0.1:8000")).rstrip("/")
_public = urlsplit(PORTCULLIS_PUBLIC_URL)
if _public.scheme not in ("http", "https") or not _public.hostname:
    raise ConfigError(f"PORTCULLIS_PUBLIC_URL: {PORTCULLIS_PUBLIC_URL!r} is not an http(s) URL; write the address "
                      "agents and browsers use, e.g. https://gateway.example.org")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_public_hosts = _LOOPBACK if _public.hostname in _LOOPBACK else (_public.hostname,)
_port = f":{_public.port}" if _public.port else ""
_public_origins = [f"{_public.scheme}://{f'[{h}]' if ':' in h else h}{_port}" for h in _public_hosts]
ALLOWED_HOSTS = list(dict.fromkeys([*env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"]),
                                    *(f"[{h}]" if ":" in h else h for h in _public_hosts)]))
# Origins allowed to call the MCP endpoint and open dashboard websockets (scheme://host:port): the public URL's,
# and any listed.
PORTCULLIS_ALLOWED_ORIGINS = list(dict.fromkeys([*env_list("PORTCULLIS_ALLOWED_ORIGINS", []), *_public_origins]))
CSRF_TRUSTED_ORIGINS = PORTCULLIS_ALLOWED_ORIGINS

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "gateway",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dashboard.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "dashboard.partials.PartialResponsesMiddleware",  # Vary: HX-Request; fragments never stored
    "dashboard.middleware.DatabaseBusyMiddleware",  # a locked or unreachable database: 503 with what to do
]

ROOT_URLCONF = "config.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "config.asgi.application"

DATABASES = {"default": database_from_url("DATABASE_URL", os.environ.get("DATABASE_URL"),
                                          STATE_DIR / "portcullis.sqlite3")}
REDIS_URL = redis_from_url("REDIS_URL", os.environ.get("REDIS_URL"))

if REDIS_URL:
    # redis-py's default socket timeout (5 s) equals the layer's blocking pop (5 s): a message popped just as the
    # client gives up reading is lost (a peer's answer, a live event). Reads wait longer than the pop.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                  "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}]}}}
else:
    # One process only: live events do not cross processes without REDIS_URL.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = STATE_DIR / "static"

# --- Gateway limits (named, each with its reason) ---
# Default per-server upstream call timeout; a server's own timeout overrides it.
PORTCULLIS_DEFAULT_TIMEOUT_S = env_int("PORTCULLIS_DEFAULT_TIMEOUT_S", 60, minimum=1)
# Largest request body an agent may send; larger bodies get 413 before they are read.
PORTCULLIS_MAX_BODY_BYTES = env_int("PORTCULLIS_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
# What an audit row (or an approval) keeps of a call's arguments, as JSON: past it, a prefix, the size and the hash.
PORTCULLIS_AUDIT_ARGUMENT_BYTES = env_int("PORTCULLIS_AUDIT_ARGUMENT_BYTES", 16 * 1024, minimum=256)
# Seconds for a request body to arrive in full (config/serve.py cuts the connection, the endpoint answers 408).
# The audit log's hash chain is keyed (gateway/calls/audit_chain.py): this key, or one derived from SECRET_KEY.
PORTCULLIS_AUDIT_KEY = env_str("PORTCULLIS_AUDIT_KEY", "")
# Audit rows older than this many days are archived (compressed JSON Lines, with the chain's anchors) and then
# deleted by the housekeeping; 0 keeps every row in the database.
PORTCULLIS_AUDIT_RETENTION_DAYS = env_int("PORTCULLIS_AUDIT_RETENTION_DAYS", 0, minimum=0)
# Every audit row streamed to a syslog receiver or an HTTP endpoint (gateway/calls/audit_stream.py):
# syslog+tcp://host:port, syslog+udp://host:port or http(s)://… (JSON Lines POSTs, with the bearer token below).
PORTCULLIS_AUDIT_STREAM = env_str("PORTCULLIS_AUDIT_STREAM", "")
if PORTCULLIS_AUDIT_STREAM and (urlsplit(PORTCULLIS_AUDIT_STREAM).scheme not in ("syslog+tcp", "syslog+udp", "http",
                                                                                   "https")
                                or not urlsplit(PORTCULLIS_AUDIT_STREAM).hostname):
    raise ConfigError("PORTCULLIS_AUDIT_STREAM: write syslog+tcp://HOST:PORT, syslog+udp://HOST:PORT or an http(s) "
                      "URL")
PORTCULLIS_AUDIT_STREAM_TOKEN = env_str("PORTCULLIS_AUDIT_STREAM_TOKEN", "")
PORTCULLIS_AUDIT_STREAM_FACILITY = env_int("PORTCULLIS_AUDIT_STREAM_FACILITY", 13, minimum=0)  # 13: log audit
PORTCULLIS_AUDIT_STREAM_WAIT_S = env_int("PORTCULLIS_AUDIT_STREAM_WAIT_S", 120, minimum=1)
PORTCULLIS_AUDIT_ARCHIVE_DIR = Path(env_str("PORTCULLIS_AUDIT_ARCHIVE_DIR", str(STATE_DIR / "audit-archive")))
# GET /metrics (gateway/telemetry/scrape.py): a bearer token, and/or the addresses (or networks) that may scrape
# without it; with neither, metrics are off.
PORTCULLIS_METRICS_TOKEN = env_str("PORTCULLIS_METRICS_TOKEN", "")
PORTCULLIS_METRICS_ALLOW = env_list("PORTCULLIS_METRICS_ALLOW", [])
for _net in PORTCULLIS_METRICS_ALLOW:
    try:
        ip_network(_net, strict=False)
    except ValueError:
        raise ConfigError(f"PORTCULLIS_METRICS_ALLOW: {_net!r} is not an address or network (e.g. 10.0.0.5 or "
                          "10.0.0.0/24)") from None
PORTCULLIS_BODY_DEADLINE_S = env_int("PORTCULLIS_BODY_DEADLINE_S", 30, minimum=1)
# A connection's request line and headers must be complete within this many seconds (config/serve.py), and one
# client address may hold at most this many connections (behind a reverse proxy: raise it, see docs/DEPLOYMENT.md).
PORTCULLIS_HEADER_DEADLINE_S = env_int("PORTCULLIS_HEADER_DEADLINE_S", 10, minimum=1)
PORTCULLIS_CONNECTIONS_PER_CLIENT = env_int("PORTCULLIS_CONNECTIONS_PER_CLIENT", 256, minimum=1)
# The HTTP server under `python -m config.serve`: daphne (the default) or uvicorn (config/serve_uvicorn.py: httptools
# parses in C, less CPU per MCP call; the same command line, limits and application).
PORTCULLIS_SERVER = env_str("PORTCULLIS_SERVER", "daphne").strip().lower()
if PORTCULLIS_SERVER not in ("daphne", "uvicorn"):
    raise ConfigError(f"PORTCULLIS_SERVER={PORTCULLIS_SERVER!r}: choose daphne or uvicorn")
# Largest single message accepted from an upstream; larger ones are refused cleanly.
PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES = env_int("PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES", 16 * 1024 * 1024,
                                                minimum=1024)
# How long a held call waits for a person before the agent is told to call again.
# Notifications (gateway/notify/): seconds before each retry of a delivery that failed (then it is given up).
PORTCULLIS_NOTIFY_RETRY_S = [int(v) for v in env_list("PORTCULLIS_NOTIFY_RETRY_S", ["5", "30", "120", "600", "1800"])]
# Email notifications go through Django's email framework; the SMTP server comes from the environment.
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "portcullis@localhost")
PORTCULLIS_APPROVAL_HOLD_S = env_int("PORTCULLIS_APPROVAL_HOLD_S", 45, minimum=1)
# How long an approval stays usable.
PORTCULLIS_APPROVAL_TTL_S = env_int("PORTCULLIS_APPROVAL_TTL_S", 3600, minimum=60)
# Pending approvals one grant may have at once; past it, a call needing a new approval is refused (isError).
PORTCULLIS_PENDING_APPROVALS_PER_GRANT = env_int("PORTCULLIS_PENDING_APPROVALS_PER_GRANT", 20, minimum=1)
# How long a stateless-era agent has to answer an upstream's input_required round and call again: the gateway's
# sealed requestState (gateway/calls/continuations.py) expires after this.
PORTCULLIS_CONTINUATION_TTL_S = env_int("PORTCULLIS_CONTINUATION_TTL_S", 600, minimum=1)
# A stateless-era agent asked mid-call by a session-era upstream (protocol/parked_calls.py): each such call holds
# its own upstream connection (for stdio, a process) while it waits for the agent's retry. At most this many per
# grant, and this many in one gateway process; past either, a new one is refused with an isError result.
PORTCULLIS_PARKED_CALLS_PER_GRANT = env_int("PORTCULLIS_PARKED_CALLS_PER_GRANT", 16, minimum=1)
# Session-era sessions per grant, across every gateway process (a row each; only private ones hold an upstream
# session of their own), and legacy HTTP+SSE streams per grant. A grant at its cap has its own least recently used
# idle session closed, or is refused (429) when all of them are in use: one grant never ends another's.
PORTCULLIS_SESSIONS_PER_GRANT = env_int("PORTCULLIS_SESSIONS_PER_GRANT", 100, minimum=1)
# Open sessions per server across every process, whatever the grant: past it a new one is refused (429).
PORTCULLIS_SESSIONS_PER_SERVER = env_int("PORTCULLIS_SESSIONS_PER_SERVER", 2000, minimum=1)
# Private sessions (their own upstream session; for stdio a process) one gateway process holds; past it a new one
# is refused (429), and a request of a private session opened elsewhere is refused (503) rather than adopted.
PORTCULLIS_SESSIONS_MAX = env_int("PORTCULLIS_SESSIONS_MAX", 1000, minimum=1)
# A session nobody used for this long is ended (on every process), with its private upstream session if it had one.
PORTCULLIS_SESSION_IDLE_S = env_int("PORTCULLIS_SESSION_IDLE_S", 30 * 60, minimum=10)
# How stale a process's view of a session may get: a session ended through another process (DELETE, idle, its
# grant's cap) stops being served here within this many seconds; it is also how often use is written down.
PORTCULLIS_SESSION_RECHECK_S = env_int("PORTCULLIS_SESSION_RECHECK_S", 2, minimum=1)
# SIGTERM: the process stops taking new work (503, /readyz fails) and gives the calls in flight this long to finish;
# what remains then is settled `interrupted`. Keep it below the orchestrator's kill timeout.
PORTCULLIS_DRAIN_S = env_int("PORTCULLIS_DRAIN_S", 30, minimum=0)
# Every process writes a heartbeat this often; one silent for three beats is dead, and its peers settle its pending
# calls as interrupted and end its legacy streams' sessions.
PORTCULLIS_HEARTBEAT_S = env_int("PORTCULLIS_HEARTBEAT_S", 10, minimum=1)
PORTCULLIS_LEGACY_STREAMS_PER_GRANT = env_int("PORTCULLIS_LEGACY_STREAMS_PER_GRANT", 20, minimum=1)
PORTCULLIS_PARKED_CALLS_MAX = env_int("PORTCULLIS_PARKED_CALLS_MAX", 64, minimum=1)
# Session-era SSE resumability (Last-Event-ID): the events one session keeps for replay, across its streams;
# past either cap the oldest are dropped. A finished stream can be resumed for the TTL after its final response.
PORTCULLIS_SSE_REPLAY_MAX_EVENTS = env_int("PORTCULLIS_SSE_REPLAY_MAX_EVENTS", 1000, minimum=1)
PORTCULLIS_SSE_REPLAY_MAX_BYTES = env_int("PORTCULLIS_SSE_REPLAY_MAX_BYTES", 4 * 1024 * 1024, minimum=1024)
PORTCULLIS_SSE_REPLAY_TTL_S = env_int("PORTCULLIS_SSE_REPLAY_TTL_S", 300, minimum=1)
# Extra argument key names (comma separated, case-insensitive substrings) and value regexes to redact.
PORTCULLIS_REDACT_KEYS = env_list("PORTCULLIS_REDACT_KEYS", [])
PORTCULLIS_REDACT_PATTERNS = env_list("PORTCULLIS_REDACT_PATTERNS", [])
# Per tool, fields to redact besides key names and the schema's marks: tool-glob:dotted.path (gateway/redaction.py).
PORTCULLIS_REDACT_FIELDS = env_list("PORTCULLIS_REDACT_FIELDS", [])
# Environment variables a stdio upstream inherits from the gateway (never the gateway's secrets).
PORTCULLIS_STDIO_ENV_ALLOW = env_list("PORTCULLIS_STDIO_ENV_ALLOW",
                                      ["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL"])

# Programs a stdio server may start (exact first words of its command line; empty: any, for the people allowed
# to set commands) and environment keys a stdio server may be given although they change how programs start.
PORTCULLIS_STDIO_COMMANDS = env_list("PORTCULLIS_STDIO_COMMANDS", [])
PORTCULLIS_STDIO_ENV_KEYS_ALLOWED = env_list("PORTCULLIS_STDIO_ENV_KEYS_ALLOWED", [])

# The kinds of address an http/sse upstream may have (gateway/upstream_addresses.py), checked at registration and
# before every connection: public, private, loopback, link-local, metadata (cloud metadata services, refused unless
# listed even where private or link-local are). Reserved addresses (0.0.0.0, multicast, ...) are never allowed.
PORTCULLIS_UPSTREAM_ADDRESSES = env_list("PORTCULLIS_UPSTREAM_ADDRESSES", ["public", "private", "loopback"])
if _unknown := [k for k in PORTCULLIS_UPSTREAM_ADDRESSES
                if k not in ("public", "private", "loopback", "link-local", "metadata")]:
    raise ConfigError(f"PORTCULLIS_UPSTREAM_ADDRESSES: {_unknown[0]!r} is not a kind of address; list some of "
                      f"public, private, loopback, link-local, metadata (comma separated)")

# The process log: plain lines, or JSON Lines for a log shipper (config/json_logs.py).
LOG_FORMAT = env_str("PORTCULLIS_LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ConfigError(f"PORTCULLIS_LOG_FORMAT: {LOG_FORMAT!r} is not a log format; use plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                   "json": {"()": "config.json_logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
