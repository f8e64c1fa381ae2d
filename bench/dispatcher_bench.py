"""The same TrueNAS catalogue as 278 flat tools and as the 278 actions of one dispatcher tool, side by side:
server time of the builder and catalogue pages, the grant's tools/list filtering, and one call's admission (policy,
counter, audit row), under the seed policy.

Run: .venv/bin/python bench/dispatcher_bench.py [--repeat 15] [--calls 2000]

A throw-away SQLite database (never var/), Django's test client in-process (the server's time: no network, no
browser); calls.admit() in-process for the admission (its CPU time per call, the database included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dashboard_bench import measure, p95, setup  # noqa: E402

UMBRELLA = {"name": "truenas", "description": "Run any TrueNAS action.",
            "inputSchema": {"type": "object", "properties": {"category": {"type": "string"},
                                                             "action": {"type": "string"},
                                                             "params": {"type": "object"}}}}


def seed():
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from gateway import policies
    from gateway.catalogue import actions
    from gateway.catalogue.sync import sync_tools
    from gateway.grants import create_grant
    from gateway.models import Server, Tool
    from gateway.policy.dispatch import Shape
    from tests.dashboard.fixtures import make_truenas, seed_policy

    flat = make_truenas()
    umbrella = Server.objects.create(slug="umbrella", name="TrueNAS (one tool)", transport="stdio",
                                     command=["truenas-sim", "--umbrella"])
    sync_tools(umbrella, [UMBRELLA], timezone.now())
    tool = Tool.objects.get(server=umbrella, name="truenas")
    actions.declare(tool, Shape.from_json(tool.dispatch_suggested), actor="bench")
    tool.refresh_from_db()
    actions.import_actions(tool, actions.truenas_action_list())
    policies.apply(umbrella, seed_policy(), actor="bench")
    user = get_user_model().objects.create_user("bench", password="bench-password-1", is_staff=True)  # noqa: S106
    token = create_grant("bench-agent", [flat, umbrella], None).token
    return flat, umbrella, user, token


def cpu_per_call(fn, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portcullis-bench-") as state_dir:
        setup(state_dir)
        flat, umbrella, user, token = seed()
        run(flat, umbrella, user, token, args)


def run(flat, umbrella, user, token, args) -> None:
    from django.test import Client
    from django.utils import timezone

    from gateway import calls
    from gateway.models import Call
    from gateway.protocol.tools_list import visible_tools
    from tests.dashboard.fixtures import truenas_definitions

    client = Client()
    client.force_login(user)
    print(f"{'request':40} {'flat median':>11} {'p95':>7} {'dispatcher median':>18} {'p95':>7}  ms")
    pages = [("builder page (278 tools / actions)", "/servers/{}/policy/", None, False),
             ("builder search 'cloud' (htmx)", "/servers/{}/policy/", {"q": "cloud"}, True),
             ("builder filter destructive (htmx)", "/servers/{}/policy/", {"category": "destructive"}, True),
             ("catalogue page", "/servers/{}/tools/", None, False),
             ("tool page: cloud_backup_run", "/servers/{}/tools/cloud_backup_run/", None, False),
             ("tool page: truenas", "/servers/{}/tools/truenas/", None, False)]
    for name, url, data, htmx in pages:
        flat_t = measure(client, "get", url.format(flat.slug), data, args.repeat, htmx)
        disp_t = measure(client, "get", url.format(umbrella.slug), data, args.repeat, htmx)
        print(f"{name:40} {statistics.median(flat_t):11.1f} {p95(flat_t):7.1f} "
              f"{statistics.median(disp_t):18.1f} {p95(disp_t):7.1f}")
    listing = {flat.slug: truenas_definitions(), umbrella.slug: [UMBRELLA]}
    for server in (flat, umbrella):  # the first listing syncs; then what each tools/list costs
        visible_tools(server, token, listing[server.slug], True, True)
    print(f"{'tools/list filtering for the grant':40} " + " ".join(
        f"{cpu_per_call(lambda s=s: visible_tools(s, token, listing[s.slug], True, True), 50):{w}.2f}"
        for s, w in ((flat, 11), (umbrella, 26))) + "  ms CPU")
    flat_call = lambda: calls.admit(token, flat, "pool_list", {}, timezone.now())  # noqa: E731
    umbrella_call = lambda: calls.admit(token, umbrella, "truenas", {  # noqa: E731
        "category": "storage", "action": "pool_list", "params": {}}, timezone.now())
    print(f"{'one admission (policy, audit row)':40} {cpu_per_call(flat_call, args.calls):11.3f} "
          f"{cpu_per_call(umbrella_call, args.calls):26.3f}  ms CPU per call, SQLite in-process")
    print(f"audit rows written: {Call.objects.count()}")
    for server in (flat, umbrella):
        body = client.get(f"/servers/{server.slug}/policy/").content.decode()
        rows = body.count('<tr id="tool-')
        print(f"builder of {server.slug}: {rows} rows, {len(body):,} bytes")


if __name__ == "__main__":
    main()
