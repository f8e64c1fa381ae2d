"""The simulated TrueNAS host: one ``State`` per process, seeded deterministically.

``State`` is plain Python (no MCP): create one, call ``state.run(spec, arguments)`` or the ``op_<action>``
methods directly, read ``state.resource(name)``. Jobs advance with the clock whenever the state is used;
``state.jobs.next_deadline()`` tells a server when to look again.
"""

from __future__ import annotations

from typing import Any

from .base import JOB_SECONDS_ENV, public
from .catalogue import ToolSpec
from .errors import ApiError
from .generic import GenericOps
from .ops_apps import AppVmOps
from .ops_disks import DiskOps
from .ops_protection import ProtectionOps
from .ops_storage import StorageOps
from .ops_system import SystemOps

__all__ = ["ApiError", "JOB_SECONDS_ENV", "RESOURCES", "State"]

RESOURCES: dict[str, tuple[str, str]] = {
    "system/info": ("System information", "Version, hostname, hardware and uptime of the simulated host."),
    "pools": ("Storage pools", "Every ZFS pool with health, capacity and scrub state."),
    "datasets": ("Datasets", "Every dataset and zvol with usage and properties."),
    "snapshots": ("Snapshots", "Every ZFS snapshot."),
    "disks": ("Disks", "Physical disks and the pool each belongs to."),
    "services": ("Services", "System services and whether they run."),
    "shares": ("Shares", "SMB and NFS shares."),
    "alerts": ("Alerts", "Current alerts."),
    "jobs": ("Jobs", "Background jobs, newest last, with state and progress."),
    "apps": ("Apps", "Installed apps and their state."),
    "vms": ("Virtual machines", "Virtual machines and their state."),
    "users": ("Users", "Local users and groups."),
    "data-protection": ("Data protection tasks", "Snapshot, cloud sync and cloud backup tasks with cloud "
                        "credentials and stored backup snapshots."),
    "debug/calls": ("Call counter", "How many times each tool and action was called on this simulator, "
                    "plus the most recent calls. Reading it is not counted."),
}


class State(StorageOps, DiskOps, SystemOps, AppVmOps, ProtectionOps, GenericOps):
    """All behaviour of the simulated host."""

    def run(self, spec: ToolSpec, arguments: dict[str, Any]) -> Any:
        """Perform one action with already validated arguments. Raises ApiError for API failures."""
        self.tick()
        op = getattr(self, f"op_{spec.name}", None)
        result = op(arguments) if op is not None else self.generic(spec, arguments)
        self.tick()
        return result

    def job_view(self, job_id: int) -> dict[str, Any]:
        return self.jobs.get(job_id).view()

    def resource(self, name: str) -> Any:
        """The current JSON value of one ``truenas://<name>`` resource."""
        self.tick()
        if name.startswith("jobs/"):
            return self.job_view(_int(name.split("/", 1)[1]))
        builder = {
            "system/info": lambda: self.op_system_info({}),
            "pools": lambda: self.op_pool_list({}),
            "datasets": lambda: self.op_dataset_list({}),
            "snapshots": lambda: self.op_snapshot_list({}),
            "disks": lambda: self.op_disk_list({}),
            "services": lambda: self.op_service_list({}),
            "shares": lambda: {"smb": self.op_smb_share_list({}), "nfs": self.op_nfs_share_list({})},
            "alerts": lambda: self.op_alert_list({}),
            "jobs": self.jobs.views,
            "apps": lambda: self.op_app_list({}),
            "vms": lambda: self.op_vm_list({}),
            "users": lambda: {"users": self.op_user_list({}), "groups": self.op_group_list({})},
            "data-protection": self._protection_summary,
            "debug/calls": self.calls_report,
        }.get(name)
        if builder is None:
            raise ApiError(404, f"[ENOENT] resource truenas://{name} does not exist")
        return builder()

    def _protection_summary(self) -> dict[str, Any]:
        return {
            "snapshot_tasks": self.op_snapshot_task_list({}),
            "cloud_credentials": self.op_cloudsync_credentials_list({}),
            "cloudsync_tasks": self.op_cloudsync_list({}),
            "cloud_backup_tasks": [
                {**task, "snapshots": self.backup_snapshots.get(task["id"], [])}
                for task in self.op_cloud_backup_list({})
            ],
            "replication_tasks": [public(r) for r in self.collections["replication"].values()],
        }


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(404, f"[ENOENT] job {text!r} does not exist") from None
