"""How long one policy evaluation takes (the engine runs on every tools/call).

Run: .venv/bin/python -m bench.policy_bench
"""

from __future__ import annotations

import json
import time
from importlib import resources

from gateway.policy import Facts, evaluate, parse_policy

ROUNDS = 50_000


def main() -> None:
    seed = json.loads(resources.files("gateway").joinpath("seed/truenas-policy.json").read_text())
    policy = parse_policy(seed)
    cases = {
        "read, allowed": Facts("g", "truenas", "dataset_list", "read", "low", {}),
        "cloud_backup_run, limited": Facts("g", "truenas", "cloud_backup_run", "execute", "high", {"id": 1}),
        "destructive, denied": Facts("g", "truenas", "dataset_delete", "destructive", "critical", {"id": "x"}),
    }
    now = time.time()
    for label, facts in cases.items():
        start = time.perf_counter()
        for _ in range(ROUNDS):
            evaluate(facts, policy, {}, now)
        per_call = (time.perf_counter() - start) / ROUNDS
        print(f"evaluate ({label}): {per_call * 1e6:.1f} µs per call")


if __name__ == "__main__":
    main()
