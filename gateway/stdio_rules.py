"""What a stdio upstream may be given to run: which commands, which environment keys.

A stdio server's command line and environment run as the gateway's own user, next to the keys that sign
sessions and decrypt every upstream secret. Who may set them is narrower than who may edit policy (the
`gateway.change_server_command` permission, superusers included; see dashboard/access.py), and what they may set
is bounded here for everybody, the command line included:

1. Commands: when `PORTCULLIS_STDIO_COMMANDS` lists any, the program (the first word) must be one of them,
   compared exactly (a bare name is looked up on PATH; a path must be the same path).
2. Environment keys that change how an interpreter, a loader or a shell starts a program (PYTHONPATH, LD_PRELOAD,
   NODE_OPTIONS, PATH, …) would let a trusted command line run other code: they are refused unless listed in
   `PORTCULLIS_STDIO_ENV_KEYS_ALLOWED`.

The same checks run when a server is saved (every path: dashboard, commands) and again before a process starts, so
a row written some other way still cannot start with them.
"""

from __future__ import annotations

import os
import shutil
import sys

from django.conf import settings

# Exact names (compared upper-case) and prefixes of environment keys that change what a program loads or runs.
UNSAFE_ENV_KEYS = frozenset({
    "PATH", "HOME", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "CDPATH", "GCONV_PATH",
    "CLASSPATH", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "XDG_DATA_HOME", "XDG_DATA_DIRS", "ZDOTDIR",
    "OPENSSL_CONF", "OPENSSL_ENGINES", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "TMPDIR", "MALLOC_CONF", "HOSTALIASES", "RESOLV_HOST_CONF", "LOCPATH", "NLSPATH",
})
UNSAFE_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON", "NODE_", "NPM_CONFIG_", "PERL", "RUBY", "GEM_", "BUNDLE_",
                       "JAVA_", "_JAVA_", "JDK_", "GIT_", "BASH_FUNC_", "UV_", "PIP_", "DENO_", "BUN_")
# Keys under those prefixes that only change output or warnings, never what is loaded.
HARMLESS_ENV_KEYS = frozenset({"PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE", "PYTHONUTF8",
                               "NODE_ENV", "NODE_NO_WARNINGS"})


class LaunchRefused(ValueError):
    """A command or environment the rules above refuse; the message says what to do."""


def unsafe_env_keys(env: dict[str, str]) -> list[str]:
    allowed = {key.upper() for key in settings.PORTCULLIS_STDIO_ENV_KEYS_ALLOWED}
    return sorted(key for key in env if key.upper() not in allowed and _unsafe(key.upper()))


def _unsafe(key: str) -> bool:
    return key not in HARMLESS_ENV_KEYS and (key in UNSAFE_ENV_KEYS or key.startswith(UNSAFE_ENV_PREFIXES))


def env_problem(env: dict[str, str]) -> str | None:
    keys = unsafe_env_keys(env)
    if not keys:
        return None
    return (f"{', '.join(keys)} {'changes' if len(keys) == 1 else 'change'} how the program or its interpreter "
            "starts, so a trusted command could run other code: remove "
            f"{'it' if len(keys) == 1 else 'them'}, or ask the gateway's administrator to allow "
            f"{'it' if len(keys) == 1 else 'them'} (PORTCULLIS_STDIO_ENV_KEYS_ALLOWED)")


def command_problem(argv: list[str]) -> str | None:
    allowed = settings.PORTCULLIS_STDIO_COMMANDS
    if not argv or not allowed or argv[0] in allowed:
        return None
    return (f"{argv[0]!r} is not one of the commands this gateway may start ({', '.join(allowed)}); ask the "
            "gateway's administrator to add it (PORTCULLIS_STDIO_COMMANDS)")


def search_path() -> str:
    """Where a bare program name is looked up: PATH, then the gateway's own environment (the virtualenv's bin
    directory, where `pip install`ed MCP servers such as mcp-server-time land even when PATH lacks it)."""
    return os.pathsep.join(p for p in (os.environ.get("PATH", ""), os.path.dirname(sys.executable)) if p)


def resolve_program(program: str) -> str | None:
    """The executable a command's first word names, or None when there is none on this host."""
    if os.sep in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program, path=search_path())


def missing_program(argv: list[str]) -> str | None:
    """What to do when the command's program is not on the gateway's host; None when it is."""
    if not argv or resolve_program(argv[0]) is not None:
        return None
    where = "that path" if os.sep in argv[0] else "PATH or the gateway's Python environment"
    return (f"{argv[0]!r} was not found on the gateway's host (looked in {where}): install it there, or give the "
            "full path of the program")


def check_launch(argv: list[str], env: dict[str, str]) -> None:
    """Raise LaunchRefused naming the first problem, before a process is started."""
    problem = command_problem(argv) or env_problem(env)
    if problem is not None:
        raise LaunchRefused(problem)
