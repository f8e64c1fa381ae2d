"""Replay of a draft against 100,000 recorded calls (issue 15): the time to read them from the audit log and to
decide each twice (the policy in force and the draft), counters simulated over their timestamps.

Run: .venv/bin/python bench/replay_bench.py [--calls 100000]

A throw-away SQLite database (never var/); the TrueNAS catalogue under the seed policy; calls spread over a day,
a third of them cloud_backup_run bursts. The draft tightens the backup limit and checks dataset names (so the
arguments of dataset_create calls are read too). Target: under 2 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dashboard_bench import setup  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portcullis-bench-") as state_dir:
        setup(state_dir)
        from django.utils import timezone

        from gateway.calls import replaying
        from gateway.models import Call
        from tests.dashboard.fixtures import make_truenas, seed_policy

        server = make_truenas()
        now, batch = timezone.now(), []
        names = ["cloud_backup_run", "pool_list", "dataset_create", "disk_list", "dataset_delete", "service_restart"]
        for i in range(args.calls):
            name = names[0] if i % 3 == 0 else names[i % len(names)]
            batch.append(Call(created_at=now - timezone.timedelta(seconds=(args.calls - i) * 0.8), server=server,
                              server_slug="truenas", grant_name="agent", tool_name=name, decision="allow",
                              outcome="ok", arguments={"name": f"tank/agents/{i}"} if name == "dataset_create" else {}))
            if len(batch) == 5000:
                Call.objects.bulk_create(batch)
                batch = []
        Call.objects.bulk_create(batch)
        draft = seed_policy()
        draft["tools"] = {"cloud_backup_run": {"limits": [
            {"counter": "cloud_backup_run_rate", "window": "minute", "max": 5, "scope": "grant"}]},
            "dataset_create": {"require": [{"path": "args.name", "op": "regex", "value": "^tank/agents/"}]}}
        for _ in range(2):  # the first run also warms the process
            started = time.perf_counter()
            cpu = time.process_time()
            result = replaying.replay_draft(server, draft, last=args.calls)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print("\n".join(result.lines()))
        print(f"replay of {result.calls:,} calls: {wall:.2f} s wall, {cpu:.2f} s CPU (target: under 2 s)")


if __name__ == "__main__":
    main()
