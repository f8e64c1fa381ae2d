"""Server time of every dashboard page and htmx interaction with the 279-tool TrueNAS catalogue and 100,000 calls.

Run: .venv/bin/python bench/dashboard_bench.py [--calls 100000] [--repeat 15]

It uses a throw-away SQLite database in a temporary directory (never var/), Django's test client in-process
(so the time is the server's: middleware, view, ORM, templates; no network, no browser), and prints the median
and the 95th percentile per request. The goal is under 300 ms for each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_MS = 300
WIDE = {"hide-0": "system_*", "hide-1": "", "show_denied": "on", "on_deny": "ask an operator",
        "limit-0-counter": "", "limit-0-max": "600", "limit-0-window": "minute", "limit-0-scope": "grant"}
GLOB = {"props_key": "dataset_*", "action": "allow", "limit-0-counter": "", "limit-0-max": "20",
        "limit-0-window": "minute", "limit-0-scope": "grant"}


def setup(state_dir: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["PORTCULLIS_STATE_DIR"] = state_dir
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()  # lets the test client's host through ALLOWED_HOSTS
    call_command("migrate", verbosity=0)


def seed(n_calls: int):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from gateway.models import Call
    from tests.dashboard.fixtures import make_truenas

    server = make_truenas()
    user = get_user_model().objects.create_user("bench", password="bench-password-1", is_staff=True)  # noqa: S106
    now, batch = timezone.now(), []
    tools = list(server.tools.values_list("name", flat=True))
    for i in range(n_calls):
        deny = i % 4 == 0
        batch.append(Call(created_at=now - timezone.timedelta(seconds=i), server=server, server_slug="truenas",
                          grant_name=f"agent-{i % 5}", tool_name=tools[i % len(tools)],
                          decision="deny" if deny else "allow", outcome="refused" if deny else "ok",
                          reason="denied by rule /risk/destructive" if deny else "", latency_ms=float(i % 200),
                          rule="/risk/destructive" if deny else "/risk/read", arguments={"i": i}))
        if len(batch) == 5000:
            Call.objects.bulk_create(batch)
            batch = []
    Call.objects.bulk_create(batch)
    return server, user


def measure(client, method: str, url: str, data=None, repeat: int = 15, htmx: bool = False) -> list[float]:
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "tool-groups"} if htmx else {}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = getattr(client, method)(url, data or {}, **headers)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code >= 400:
            raise SystemExit(f"{method.upper()} {url} -> {response.status_code}")
    return times


def p95(times: list[float]) -> float:
    times = sorted(times)
    return times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portcullis-bench-") as state_dir:
        setup(state_dir)
        started = time.perf_counter()
        server, user = seed(args.calls)
        print(f"seeded {server.tools.count()} tools and {args.calls} calls in {time.perf_counter() - started:.1f} s")
        run(user, args.repeat)


def run(user, repeat: int) -> None:
    from django.test import Client

    from gateway.calls.call_log import CallFilter, page
    from gateway.models import Call, Tool

    client = Client()
    client.force_login(user)
    b = "/servers/truenas/policy/"
    destructive = list(Tool.objects.filter(risk_category="destructive").values_list("name", flat=True))
    deep = page(CallFilter(), "", size=1).rows[0]
    middle = Call.objects.order_by("-created_at", "-id")[Call.objects.count() // 2]
    cursor = f"{middle.created_at.isoformat()}_{middle.pk}"
    cases = [
        ("overview, last hour", "get", "/", None, False),
        ("overview, last day (86,400 calls)", "get", "/", {"period": "day"}, False),
        ("servers page", "get", "/servers/", None, False),
        ("server detail", "get", "/servers/truenas/", None, False),
        ("catalogue page", "get", "/servers/truenas/tools/", None, False),
        ("catalogue search (htmx)", "get", "/servers/truenas/tools/", {"q": "dataset"}, True),
        ("catalogue filter action=deny (htmx)", "get", "/servers/truenas/tools/", {"action": "deny"}, True),
        ("tool detail", "get", "/servers/truenas/tools/cloud_backup_create/", None, False),
        ("builder page (279 rows)", "get", b, None, False),
        ("builder search (htmx)", "get", b, {"q": "cloud"}, True),
        ("builder filter destructive (htmx)", "get", b, {"category": "destructive"}, True),
        ("builder click one action (htmx)", "post", b + "action/", {"tool": "pool_list", "set": "deny"}, True),
        ("builder toggle selection (htmx)", "post", b + "select/", {"what": "toggle", "tool": "disk_list"}, True),
        ("builder select all matching (htmx)", "post", b + "select/", {"what": "matching",
                                                                       "category": "destructive"}, True),
        ("builder bulk approve: what changes (htmx)", "post", b + "bulk/", {"set": "approve",
                                                                            "category": "destructive"}, True),
        ("builder bulk limit: what changes (htmx)", "post", b + "bulk/", {"set": "limit", "max": "30",
                                                                           "window": "minute", "scope": "grant"}, True),
        ("builder bulk approve, confirmed (htmx)", "post", b + "bulk/", {
            "set": "approve", "confirm": "1", "category": "destructive", "tool": destructive}, True),
        ("builder default (htmx)", "post", b + "default/", {"default": "deny"}, True),
        ("builder preview + diff (htmx)", "get", b + "preview/", None, True),
        ("builder policy-wide: hide + limit (htmx)", "post", b + "wide/", WIDE, True),
        ("builder policy-wide: error shown (htmx)", "post", b + "wide/", {**WIDE, "limit-0-max": "0"}, True),
        ("builder glob card reload (htmx)", "get", b + "globs/", None, True),
        ("glob matches as you type (htmx)", "get", b + "globs/matches/", {"key": "pool_*"}, True),
        ("glob editor, new pattern", "get", b + "globs/new/", {"key": "pool_*"}, False),
        ("glob editor", "get", b + "globs/dataset_*/", None, False),
        ("glob editor save", "post", b + "globs/dataset_*/", {"key": "dataset_*", **GLOB}, False),
        ("tool rule editor", "get", b + "tools/cloud_backup_create/", None, False),
        ("tool rule editor save", "post", b + "tools/cloud_backup_run/", {
            "action": "allow", "limit-0-max": "5", "limit-0-window": "minute", "limit-0-scope": "grant"}, False),
        ("versions + diff", "get", b + "versions/", None, False),
        ("export", "get", b + "export/", None, False),
        ("call log first page (100k rows)", "get", "/calls/", None, False),
        ("call log filter decision=deny", "get", "/calls/", {"decision": "deny"}, True),
        ("call log filter grant+tool", "get", "/calls/", {"grant": "agent-3", "tool": "pool_list"}, True),
        ("call log search 'destructive'", "get", "/calls/", {"q": "destructive"}, True),
        ("call log search, no match (full scan)", "get", "/calls/", {"q": "no-such-thing"}, True),
        ("call log page in the middle (keyset)", "get", "/calls/", {"before": cursor}, True),
        ("call log: rate-limited, last day, grouped", "get", "/calls/", {"kind": "limit", "period": "day",
                                                                          "group": "on"}, False),
        ("call detail", "get", f"/calls/{deep.pk}/", None, False),
        ("policy templates", "get", b + "template/", None, False),
        ("save: what it saves", "post", b + "save/", None, False),
    ]
    client.post(b + "globs/new/", {"key": "dataset_*", **GLOB})  # the builder now has a glob rule to show
    worst = 0.0
    print(f"{'request':44} {'median ms':>10} {'p95 ms':>8}")
    for name, method, url, data, htmx in cases:
        times = measure(client, method, url, data, repeat, htmx)
        slowest = p95(times)
        worst = max(worst, slowest)
        flag = "" if slowest < GOAL_MS else f"  over {GOAL_MS} ms"
        print(f"{name:44} {statistics.median(times):10.1f} {slowest:8.1f}{flag}")
    client.post(b + "save/", {"confirm": "1"})
    print(f"slowest p95: {worst:.1f} ms (goal: under {GOAL_MS} ms)")
    for name, url in (("builder page", b), ("catalogue page", "/servers/truenas/tools/")):
        print(f"{name} HTML: {len(client.get(url).content):,} bytes")


if __name__ == "__main__":
    main()
