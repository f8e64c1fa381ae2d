"""CPU per call of the database side of the hot path, in-process: one call's admission (authentication, policy, a
counter reserved, the audit row written) and its settlement (the outcome written), as `calls.admit()` and
`calls.settle()` run them for every tools/call. Without HTTP, daphne or an upstream, so changes of a few tens of
microseconds (the audit chain's digests, the metrics) show above the noise that a whole-gateway run has.

Run: .venv/bin/python bench/admission_bench.py [--calls 3000] [--rounds 7]
Against another checkout (e.g. a worktree of an older commit): run the same file from that checkout's root,
`cd /path/to/worktree && /path/to/.venv/bin/python /path/to/bench/admission_bench.py`.

A throw-away SQLite database (never var/); the median of the rounds is printed, with the spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def setup(state_dir: str) -> None:
    sys.path.insert(0, os.getcwd())  # the checkout run from: its gateway/ and config/
    os.environ["PORTCULLIS_STATE_DIR"] = state_dir
    os.environ.pop("DATABASE_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed():
    from django.utils import timezone

    from gateway import policies
    from gateway.catalogue.sync import sync_tools
    from gateway.grants import create_grant
    from gateway.models import Server

    server = Server.objects.create(slug="bench", name="bench", transport="stdio", command=["echo-server"])
    sync_tools(server, [{"name": "echo", "inputSchema": {"type": "object",
                                                         "properties": {"text": {"type": "string"}}}}],
               timezone.now())
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"echo": {"limits": [
        {"counter": "echo", "window": "day", "max": 1_000_000_000, "scope": "grant"}]}}}, actor="bench")
    return server, create_grant("bench-agent", [server], None).token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portcullis-admission-bench-") as state:
        setup(state)
        from django.utils import timezone

        from gateway import calls

        server, token = seed()
        arguments = {"text": "hello from the bench"}

        def one() -> None:
            now = timezone.now()
            admission = calls.admit(token, server, "echo", arguments, now)
            assert admission.forward, admission.message
            calls.settle(admission, outcome="ok", latency_ms=1.0, result_size=42, error="", now=now)

        for _ in range(500):
            one()
        rounds = []
        for _ in range(args.rounds):
            start = time.process_time()
            for _ in range(args.calls):
                one()
            rounds.append((time.process_time() - start) * 1000 / args.calls)
        median = statistics.median(rounds)
        print(f"checkout: {Path.cwd()}")
        print(f"admit + settle, CPU per call: {median:.3f} ms (median of {args.rounds} rounds of {args.calls}; "
              f"min {min(rounds):.3f}, max {max(rounds):.3f})")


if __name__ == "__main__":
    main()
