"""Data protection: cloud credentials, cloud sync tasks and cloud backup (restic) tasks."""

from __future__ import annotations

import copy
from typing import Any

from . import seed
from .base import StateBase, public
from .errors import ApiError, invalid
from .jobs import Job

BACKUP_GROWTH = 2 * seed.GiB  # bytes a successful cloud backup run adds to the pool's allocated space
PROVIDERS: list[dict[str, Any]] = [
    {"name": "B2", "title": "Backblaze B2", "credentials_schema": ["account", "key"]},
    {"name": "S3", "title": "Amazon S3", "credentials_schema": ["access_key_id", "secret_access_key", "endpoint"]},
    {"name": "AZUREBLOB", "title": "Microsoft Azure Blob Storage", "credentials_schema": ["account", "key"]},
    {"name": "GOOGLE_CLOUD_STORAGE", "title": "Google Cloud Storage",
     "credentials_schema": ["service_account_credentials"]},
    {"name": "DROPBOX", "title": "Dropbox", "credentials_schema": ["token"]},
    {"name": "SFTP", "title": "SFTP", "credentials_schema": ["host", "port", "user", "pass", "private_key"]},
    {"name": "WEBDAV", "title": "WebDAV", "credentials_schema": ["url", "vendor", "user", "pass"]},
]
SYNC_FIELDS = ("description", "direction", "transfer_mode", "path", "credentials", "encryption", "filename_encryption",
               "encryption_password", "encryption_salt", "schedule", "enabled", "follow_symlinks", "transfers",
               "bwlimit", "exclude", "attributes", "pre_script", "post_script", "args", "snapshot")
BACKUP_FIELDS = ("description", "path", "credentials", "attributes", "schedule", "enabled", "password", "keep_last",
                 "transfer_setting")


class ProtectionOps(StateBase):
    # -- credentials --------------------------------------------------------------------------

    def _credential(self, cred_id: Any) -> dict[str, Any]:
        return self.lookup(self.cloud_credentials, cred_id, "cloud credential")

    def op_cloudsync_credentials_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [public(c) for c in self.cloud_credentials.values()]

    def _check_provider(self, where: str, provider: str) -> None:
        names = [p["name"] for p in PROVIDERS]
        self.require(provider in names, where, f"unknown provider {provider!r}; use one of {names}")

    def op_cloudsync_credentials_create(self, a: dict[str, Any]) -> dict[str, Any]:
        self._check_provider("cloudsync_credentials_create.provider", a["provider"])
        self.require(all(c["name"] != a["name"] for c in self.cloud_credentials.values()),
                     "cloudsync_credentials_create.name", f"credentials named {a['name']!r} already exist")
        cred_id = self.next_id("cloud_credential", self.cloud_credentials)
        cred = {"id": cred_id, "name": a["name"], "provider": a["provider"],
                "attributes": copy.deepcopy(a["attributes"])}
        self.cloud_credentials[cred_id] = cred
        return public(cred)

    def op_cloudsync_credentials_update(self, a: dict[str, Any]) -> dict[str, Any]:
        cred = self._credential(a["id"])
        if "provider" in a:
            self._check_provider("cloudsync_credentials_update.provider", a["provider"])
        cred.update({k: copy.deepcopy(a[k]) for k in ("name", "provider", "attributes") if k in a})
        return public(cred)

    def op_cloudsync_credentials_delete(self, a: dict[str, Any]) -> bool:
        cred = self._credential(a["id"])
        users = [t["description"] for t in [*self.cloudsync_tasks.values(), *self.cloud_backup_tasks.values()]
                 if t["credentials"] == cred["id"]]
        self.require(not users, "cloudsync_credentials_delete", f"credentials are used by tasks {users}")
        del self.cloud_credentials[cred["id"]]
        return True

    def op_cloudsync_credentials_verify(self, a: dict[str, Any]) -> dict[str, Any]:
        self._check_provider("cloudsync_credentials_verify.provider", a["provider"])
        needed = next(p["credentials_schema"] for p in PROVIDERS if p["name"] == a["provider"])
        missing = [k for k in needed[:2] if not a["attributes"].get(k)]
        if missing:
            return {"valid": False, "error": f"missing attributes {missing}", "excerpt": None}
        return {"valid": True}

    def op_cloudsync_providers(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return copy.deepcopy(PROVIDERS)

    def op_cloudsync_list_buckets(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        self._credential(a["credentials"])
        names = sorted({t["attributes"].get("bucket") for t in [*self.cloudsync_tasks.values(),
                                                                 *self.cloud_backup_tasks.values()]
                        if t["credentials"] == a["credentials"] and t["attributes"].get("bucket")})
        return [{"Name": n, "Path": n, "Size": -1, "IsDir": True, "IsBucket": True} for n in names]

    def op_cloudsync_list_directory(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        self._credential(a["credentials"])
        return [{"Name": n, "Path": n, "Size": -1, "MimeType": "inode/directory", "IsDir": True,
                 "ModTime": seed.iso(seed.SEED_TIME)} for n in ("media", "restic")]

    # -- cloud sync tasks ---------------------------------------------------------------------

    def _last_job(self, task: dict[str, Any]) -> dict[str, Any] | None:
        job_id = task.get("_last_job")
        return self.jobs.get(job_id).view() if job_id else None

    def _task_view(self, task: dict[str, Any]) -> dict[str, Any]:
        self.tick()
        view = public(task)
        view["credentials"] = public(self.cloud_credentials[task["credentials"]]) \
            if task["credentials"] in self.cloud_credentials else None
        view["job"] = self._last_job(task)
        return view

    def _sync_task(self, task_id: Any) -> dict[str, Any]:
        return self.lookup(self.cloudsync_tasks, task_id, "cloud sync task")

    def _check_task(self, where: str, a: dict[str, Any]) -> None:
        if "path" in a:
            self.check_share_path(f"{where}.path", a["path"])
        if "credentials" in a and a["credentials"] not in self.cloud_credentials:
            raise invalid(f"{where}.credentials", f"cloud credentials {a['credentials']} do not exist")

    def op_cloudsync_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._task_view(t) for t in self.cloudsync_tasks.values()]

    def op_cloudsync_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._task_view(self._sync_task(a["id"]))

    def op_cloudsync_create(self, a: dict[str, Any]) -> dict[str, Any]:
        self._check_task("cloudsync_create", a)
        task_id = self.next_id("cloudsync", self.cloudsync_tasks)
        task = {**copy.deepcopy(seed.cloudsync_tasks()[0]), "id": task_id, "exclude": [], "attributes": {},
                **{k: copy.deepcopy(a[k]) for k in SYNC_FIELDS if k in a}}
        task.pop("_last_job", None)
        self.cloudsync_tasks[task_id] = task
        return self._task_view(task)

    def op_cloudsync_update(self, a: dict[str, Any]) -> dict[str, Any]:
        task = self._sync_task(a["id"])
        self._check_task("cloudsync_update", a)
        task.update({k: copy.deepcopy(a[k]) for k in SYNC_FIELDS if k in a})
        return self._task_view(task)

    def op_cloudsync_delete(self, a: dict[str, Any]) -> bool:
        self._sync_task(a["id"])
        del self.cloudsync_tasks[a["id"]]
        return True

    def op_cloudsync_run(self, a: dict[str, Any]) -> int:
        task = self._sync_task(a["id"])
        task_id = task["id"]

        def done(job: Job) -> None:
            self._sync_task(task_id)

        job = self.jobs.submit("cloudsync.sync", [task_id], on_success=done, lane=f"cloudsync:{task_id}")
        task["_last_job"] = job.id
        return job.id

    def _abort_lane(self, lane: str) -> bool:
        running, queued = self.jobs.lane_jobs(lane)
        for job in (queued, running):
            if job is not None:
                self.jobs.abort(job.id)
        return running is not None

    def op_cloudsync_abort(self, a: dict[str, Any]) -> bool:
        self._sync_task(a["id"])
        return self._abort_lane(f"cloudsync:{a['id']}")

    def op_cloudsync_restore(self, a: dict[str, Any]) -> dict[str, Any]:
        source = self._sync_task(a["id"])
        self.check_share_path("cloudsync_restore.path", a["path"])
        task_id = self.next_id("cloudsync", self.cloudsync_tasks)
        task = {**copy.deepcopy(public(source)), "id": task_id, "description": a["description"],
                "direction": "PULL" if source["direction"] == "PUSH" else "PUSH",
                "transfer_mode": a["transfer_mode"], "path": a["path"], "enabled": False}
        self.cloudsync_tasks[task_id] = task
        return self._task_view(task)

    # -- cloud backup tasks -------------------------------------------------------------------

    def _backup_task(self, task_id: Any) -> dict[str, Any]:
        return self.lookup(self.cloud_backup_tasks, task_id, "cloud backup task")

    def op_cloud_backup_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._task_view(t) for t in self.cloud_backup_tasks.values()]

    def _check_keep_last(self, where: str, a: dict[str, Any]) -> None:
        if "keep_last" in a:
            self.require(a["keep_last"] >= 1 and int(a["keep_last"]) == a["keep_last"], f"{where}.keep_last",
                         "must be a whole number of at least 1")

    def op_cloud_backup_create(self, a: dict[str, Any]) -> dict[str, Any]:
        self._check_task("cloud_backup_create", a)
        self._check_keep_last("cloud_backup_create", a)
        task_id = self.next_id("cloud_backup", self.cloud_backup_tasks)
        task = {**copy.deepcopy(seed.cloud_backup_tasks()[0]), "id": task_id, "attributes": {}, "password": "",
                "keep_last": 14, **{k: copy.deepcopy(a[k]) for k in BACKUP_FIELDS if k in a}}
        self.cloud_backup_tasks[task_id] = task
        self.backup_snapshots[task_id] = []
        return self._task_view(task)

    def op_cloud_backup_update(self, a: dict[str, Any]) -> dict[str, Any]:
        task = self._backup_task(a["id"])
        self._check_task("cloud_backup_update", a)
        self._check_keep_last("cloud_backup_update", a)
        task.update({k: copy.deepcopy(a[k]) for k in BACKUP_FIELDS if k in a})
        return self._task_view(task)

    def op_cloud_backup_delete(self, a: dict[str, Any]) -> bool:
        self._backup_task(a["id"])
        self._abort_lane(f"cloud_backup:{a['id']}")
        del self.cloud_backup_tasks[a["id"]]
        return True

    def op_cloud_backup_run(self, a: dict[str, Any]) -> int:
        task = self._backup_task(a["id"])
        task_id = task["id"]
        job = self.jobs.submit("cloud_backup.sync", [task_id], on_success=lambda j: self._backup_done(task_id, j),
                               lane=f"cloud_backup:{task_id}", description=f"Cloud backup task {task_id}")
        task["_last_job"] = job.id
        return job.id

    def _backup_done(self, task_id: int, job: Job) -> None:
        """A successful run: store a restic snapshot, prune to keep_last, grow the pool."""
        task = self.cloud_backup_tasks.get(task_id)
        if task is None:
            raise ApiError(404, f"[ENOENT] cloud backup task {task_id} was deleted while it ran")
        ds = self.dataset_for_path(task["path"])
        if ds is None:
            raise invalid("cloud_backup.sync", f"path {task['path']} no longer exists")
        self.backup_runs[task_id] += 1
        snaps = self.backup_snapshots.setdefault(task_id, [])
        when = job.time_finished or self.now()
        snaps.append(seed.backup_snapshot(task_id, 1000 + self.backup_runs[task_id], when, [task["path"]]))
        del snaps[: max(0, len(snaps) - int(task["keep_last"]))]
        self.grow_pool(ds["pool"], BACKUP_GROWTH)

    def op_cloud_backup_abort(self, a: dict[str, Any]) -> bool:
        self._backup_task(a["id"])
        return self._abort_lane(f"cloud_backup:{a['id']}")

    def op_cloud_backup_snapshots(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        self._backup_task(a["id"])
        self.tick()
        return copy.deepcopy(self.backup_snapshots.get(a["id"], []))
