"""StateBase: the simulator's data, its seed and the helpers every group of operations shares.

The domain operations live in mixins (``ops_*.py``, ``generic.py``); ``state.State`` puts them together.
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from . import seed
from .errors import ApiError, invalid, not_found
from .jobs import JobRunner

JOB_SECONDS_ENV = "TRUENAS_SIM_JOB_SECONDS"
DEFAULT_JOB_SECONDS = 2.0
CALL_LOG_SIZE = 200


def job_seconds_from_env() -> float:
    raw = os.environ.get(JOB_SECONDS_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_JOB_SECONDS
    except ValueError:
        return DEFAULT_JOB_SECONDS


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A deep copy without the simulator's private keys (those starting with '_')."""
    return {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_")}


def by_id(items: Iterable[dict[str, Any]], key: str = "id") -> dict[Any, dict[str, Any]]:
    return {item[key]: item for item in items}


class StateBase:
    """All in-memory state of one simulated TrueNAS host."""

    def __init__(self, *, clock: Callable[[], float] = time.time, job_seconds: float | None = None) -> None:
        self.clock = clock
        self.jobs = JobRunner(clock, job_seconds_from_env() if job_seconds is None else job_seconds)
        self.calls: Counter[str] = Counter()
        self.total_calls = 0
        self.call_log: deque[dict[str, Any]] = deque(maxlen=CALL_LOG_SIZE)
        self._call_seq = itertools.count(1)
        self._next_ids: dict[str, int] = {}
        self._seed()

    # -- seed ---------------------------------------------------------------------------------

    def _seed(self) -> None:
        self.system = seed.system_info()
        self.boottime = seed.SEED_TIME - 12 * seed.DAY
        self.disks = by_id(seed.disks(), "identifier")
        self.pools = by_id([seed.pool_tank(list(self.disks.values()))])
        self.datasets = by_id(seed.datasets(), "name")
        self.txg = 1000
        self.snapshots: dict[str, dict[str, Any]] = {}
        for snap in seed.snapshots():
            self._add_snapshot(snap["dataset"], snap["snapshot_name"], created=snap["created"],
                               used=snap["used"], referenced=snap["referenced"], txg=snap["txg"])
        self.snapshot_tasks = by_id(seed.snapshot_tasks())
        self.smb_shares = by_id(seed.smb_shares())
        self.nfs_shares = by_id(seed.nfs_shares())
        self.services = by_id(seed.services())
        self.groups = by_id(seed.groups())
        self.users = by_id(seed.users())
        self.apps = by_id(seed.apps())
        self.app_history = {"plex": ["1.2.8"], "nextcloud": ["2.0.2"]}
        self.vms = by_id(seed.vms())
        self.alerts = by_id(seed.alerts(), "uuid")
        self.cloud_credentials = by_id([copy.deepcopy(seed.B2_CREDENTIAL)])
        self.cloudsync_tasks = by_id(seed.cloudsync_tasks())
        self.cloud_backup_tasks = by_id(seed.cloud_backup_tasks())
        self.backup_snapshots: dict[int, list[dict[str, Any]]] = {1: []}
        self.backup_runs: Counter[int] = Counter()
        self.collections = {name: by_id(items) for name, items in seed.generic_collections().items()}
        self.collections["vm_device"] = by_id(seed.vm_devices())
        self.configs = seed.configs()
        self.quotas: dict[str, list[dict[str, Any]]] = {}
        self.directories = {
            "/mnt/tank/media/Movies", "/mnt/tank/media/Series", "/mnt/tank/media/Music",
            "/mnt/tank/backups/laptop", "/mnt/tank/backups/phone", "/mnt/tank/apps/plex",
            "/mnt/tank/apps/nextcloud",
        }
        self.permissions: dict[str, dict[str, Any]] = {}
        self.scrub_jobs: dict[int, int] = {}
        self._seed_history()

    def _seed_history(self) -> None:
        """Jobs that ran before the simulator started: last cloud sync, last backups, last scrub."""
        t = seed.SEED_TIME
        self.jobs.add_finished("pool.scrub", [1, "START"], t - 5 * seed.DAY, t - 5 * seed.DAY + 6 * seed.HOUR)
        sync = self.jobs.add_finished("cloudsync.sync", [1], t - 9 * seed.HOUR, t - 8.5 * seed.HOUR)
        self.cloudsync_tasks[1]["_last_job"] = sync.id
        for n in range(5):
            when = t - (5 - n) * seed.DAY + 2.5 * seed.HOUR
            job = self.jobs.add_finished("cloud_backup.sync", [1], when - 1200, when)
            self.backup_snapshots[1].append(seed.backup_snapshot(1, n, when, ["/mnt/tank/media"]))
            self.cloud_backup_tasks[1]["_last_job"] = job.id
            self.backup_runs[1] += 1

    # -- helpers ------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def tick(self) -> None:
        self.jobs.tick()

    def next_id(self, kind: str, existing: Iterable[Any]) -> int:
        numbers = [k for k in existing if isinstance(k, int)]
        nxt = max([self._next_ids.get(kind, 1), *(n + 1 for n in numbers)])
        self._next_ids[kind] = nxt + 1
        return nxt

    def next_txg(self) -> int:
        self.txg += 1
        return self.txg

    @staticmethod
    def lookup(table: dict[Any, dict[str, Any]], key: Any, kind: str) -> dict[str, Any]:
        item = table.get(key)
        if item is None:
            raise not_found(kind, key)
        return item

    @staticmethod
    def require(condition: bool, where: str, message: str) -> None:
        if not condition:
            raise invalid(where, message)

    def record_call(self, tool: str, actions: list[str], arguments: dict[str, Any] | None,
                    outcome: str) -> dict[str, Any]:
        """Count one tool call that reached the simulator and keep it in the recent-calls log.

        ``calls[tool]`` counts the MCP tool called; every action it ran (the umbrella's action, the
        action a raw API route maps to) is counted under its own name as well.
        """
        self.total_calls += 1
        self.calls[tool] += 1
        for action in dict.fromkeys(actions):
            if action != tool:
                self.calls[action] += 1
        entry = {"seq": next(self._call_seq), "time": seed.iso(self.now()), "tool": tool,
                 "action": actions[-1] if actions else None, "arguments": copy.deepcopy(arguments or {}),
                 "outcome": outcome}
        self.call_log.append(entry)
        return entry

    def calls_report(self) -> dict[str, Any]:
        """What ``truenas://debug/calls`` shows: totals, per-name counts and the most recent calls."""
        return {"total": self.total_calls, "counts": dict(sorted(self.calls.items())),
                "recent": list(self.call_log)}

    # -- shared storage helpers (used by several mixins) ----------------------------------------

    def _add_snapshot(self, dataset: str, name: str, *, created: float | None = None, used: int = 0,
                      referenced: int | None = None, txg: int | None = None) -> dict[str, Any]:
        ds = self.datasets[dataset]
        snap = {"id": f"{dataset}@{name}", "dataset": dataset, "pool": ds["pool"], "snapshot_name": name,
                "txg": txg if txg is not None else self.next_txg(),
                "created": self.now() if created is None else created, "used": used,
                "referenced": ds["used"] if referenced is None else referenced, "holds": {}}
        self.snapshots[snap["id"]] = snap
        return snap

    def path_exists(self, path: str) -> bool:
        path = path.rstrip("/") or "/"
        if path in ("/mnt",) or path in self.directories:
            return True
        return any(self.mountpoint(ds) == path for ds in self.datasets.values())

    @staticmethod
    def mountpoint(ds: dict[str, Any]) -> str | None:
        return None if ds["type"] == "VOLUME" else f"/mnt/{ds['name']}"

    def dataset_for_path(self, path: str) -> dict[str, Any] | None:
        """The dataset whose mountpoint holds ``path`` (the deepest one)."""
        best: dict[str, Any] | None = None
        for ds in self.datasets.values():
            mp = self.mountpoint(ds)
            if mp and (path == mp or path.startswith(mp + "/")):
                if best is None or len(ds["name"]) > len(best["name"]):
                    best = ds
        return best

    def check_share_path(self, where: str, path: str) -> None:
        if not path.startswith("/mnt/"):
            raise invalid(where, f"path {path!r} must be under /mnt/<pool>")
        if not self.path_exists(path):
            raise invalid(where, f"path {path!r} does not exist")
        ds = self.dataset_for_path(path)
        if ds is not None and ds["locked"]:
            raise invalid(where, f"path {path!r} is on locked dataset {ds['name']}")

    def grow_pool(self, pool_name: str, delta: int) -> None:
        """Change a pool's allocated bytes (clamped to its size) and raise a capacity alert over 80 %."""
        pool = next((p for p in self.pools.values() if p["name"] == pool_name), None)
        if pool is None:
            raise ApiError(404, f"[ENOENT] pool {pool_name!r} does not exist")
        pool["allocated"] = max(0, min(pool["size"], pool["allocated"] + delta))
        pool["free"] = pool["size"] - pool["allocated"]
        if pool["allocated"] >= 0.8 * pool["size"]:
            self.raise_alert("ZpoolCapacityWarning", "WARNING",
                             f"Space usage for pool {pool_name} is {100 * pool['allocated'] // pool['size']}%. "
                             "Keep usage below 80% for best performance.", key=f"capacity-{pool_name}")

    def raise_alert(self, klass: str, level: str, text: str, *, key: str) -> dict[str, Any]:
        existing = next((a for a in self.alerts.values() if a["key"] == key), None)
        stamp = {"$date": int(self.now() * 1000)}
        if existing is not None:
            existing.update(text=text, formatted=text, last_occurrence=stamp)
            return existing
        uid = seed.fake_id("alert", key, self.now(), length=32)
        uuid = f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:32]}"
        alert = {"uuid": uuid, "id": uuid, "source": "", "klass": klass, "args": None, "node": "Controller A",
                 "key": key, "datetime": stamp, "last_occurrence": stamp, "dismissed": False, "mail": None,
                 "text": text, "formatted": text, "level": level, "one_shot": True}
        self.alerts[uuid] = alert
        return alert

    def clear_alerts(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        for uuid in [u for u, a in self.alerts.items() if predicate(a)]:
            del self.alerts[uuid]
