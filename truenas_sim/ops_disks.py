"""Disk and filesystem operations."""

from __future__ import annotations

import posixpath
from typing import Any

from . import seed
from .base import StateBase, public
from .errors import ApiError, invalid
from .jobs import Job, date

DISK_SETTINGS = ("description", "standby", "advpowermgmt", "togglesmart", "smartoptions", "critical",
                 "difference", "informational", "hddstandby", "passwd", "email", "enclosure_slot")


class DiskOps(StateBase):
    def _find_disk(self, key: str) -> dict[str, Any]:
        disk = self.disks.get(key) or next((d for d in self.disks.values() if key in (d["name"], d["serial"])), None)
        if disk is None:
            raise ApiError(404, f"[ENOENT] disk {key!r} does not exist")
        return disk

    @staticmethod
    def disk_view(disk: dict[str, Any]) -> dict[str, Any]:
        view = public(disk)
        view["passwd"] = ""  # write-only, as on a real system
        return view

    def op_disk_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.disk_view(d) for d in sorted(self.disks.values(), key=lambda d: d["name"])]

    def op_disk_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return self.disk_view(self._find_disk(a["id"]))

    def op_disk_update(self, a: dict[str, Any]) -> dict[str, Any]:
        disk = self._find_disk(a["id"])
        for key in DISK_SETTINGS:
            if key in a:
                disk[key] = a[key]
        return self.disk_view(disk)

    def op_disk_wipe(self, a: dict[str, Any]) -> int:
        disk = self._find_disk(a["id"])
        self.require(a["dev_name"] == disk["name"], "disk_wipe.dev_name",
                     f"{a['dev_name']!r} does not match disk {disk['name']}")
        if disk["pool"] is not None:
            raise invalid("disk_wipe", f"disk {disk['name']} is in use by pool {disk['pool']}; it cannot be wiped")

        def done(job: Job) -> None:
            disk["zfs_guid"] = None

        return self.jobs.submit("disk.wipe", [disk["name"], a["mode"]], on_success=done,
                                lane=f"wipe:{disk['name']}").id

    def op_disk_temperatures(self, a: dict[str, Any]) -> dict[str, float | None]:
        names = {d["name"]: i for i, d in enumerate(sorted(self.disks.values(), key=lambda d: d["name"]))}
        return {n: (34.0 + 2 * names[n]) if n in names else None for n in a["names"]}

    def op_disk_smart_test_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for disk in sorted(self.disks.values(), key=lambda d: d["name"]):
            if a.get("disk") and a["disk"] not in (disk["name"], disk["identifier"]):
                continue
            failing = disk["name"] == "sdb"
            rows.append({"disk": disk["name"], "identifier": disk["identifier"], "tests": [{
                "num": 1, "description": "Short offline", "status": "SUCCESS",
                "status_verbose": "Completed without error", "remaining": 0.0, "lifetime": 21000 + 13 * len(rows),
                "lba_of_first_error": None}], "current_test": None,
                "pending_sectors": 8 if failing else 0})
        return rows

    def op_disk_smart_test_run(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for name in a["disks"]:
            try:
                disk = self._find_disk(name)
                out.append({"disk": disk["name"], "identifier": disk["identifier"],
                            "expected_result_time": date(self.now() + (120 if a["type"] == "SHORT" else 36000)),
                            "job": None, "error": None})
            except ApiError:
                out.append({"disk": name, "identifier": None, "expected_result_time": None,
                            "job": None, "error": "Disk not found"})
        return out

    # -- filesystem ---------------------------------------------------------------------------

    def _fs_path(self, where: str, path: str, *, must_exist: bool = True) -> str:
        norm = posixpath.normpath(path)
        if norm != "/mnt" and not norm.startswith("/mnt/"):
            raise invalid(where, f"path {path!r} is outside /mnt")
        if must_exist and not self.path_exists(norm):
            raise ApiError(404, f"[ENOENT] {norm}: no such file or directory")
        return norm

    def _entry(self, path: str) -> dict[str, Any]:
        perms = self.permissions.get(path, {})
        mountpoints = {self.mountpoint(d) for d in self.datasets.values()}
        uid = perms.get("uid", 0 if path in mountpoints else 3000)
        return {
            "name": posixpath.basename(path) or "/", "path": path, "realpath": path, "type": "DIRECTORY",
            "size": 4096, "allocation_size": 4096, "mode": 0o40000 | int(str(perms.get("mode", "755")), 8),
            "acl": bool(self.permissions.get(path, {}).get("dacl")), "uid": uid, "gid": perms.get("gid", uid),
            "is_mountpoint": path in mountpoints, "is_ctldir": False, "xattrs": [], "zfs_attrs": [],
        }

    def _dir_children(self, path: str) -> list[str]:
        kids = {d for d in self.directories if posixpath.dirname(d) == path}
        kids |= {mp for mp in (self.mountpoint(d) for d in self.datasets.values())
                 if mp and posixpath.dirname(mp) == path}
        return sorted(kids)

    def op_filesystem_listdir(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        path = self._fs_path("filesystem_listdir", a["path"])
        offset, limit = int(a.get("offset") or 0), int(a.get("limit") or 100)
        return [self._entry(p) for p in self._dir_children(path)[offset:offset + limit]]

    def op_filesystem_stat(self, a: dict[str, Any]) -> dict[str, Any]:
        path = self._fs_path("filesystem_stat", a["path"])
        entry = self._entry(path)
        t = date(seed.SEED_TIME)
        inode = int(seed.fake_id("inode", path, length=6), 16)
        entry.update(atime=t, mtime=t, ctime=t, btime=t, dev=2049, inode=inode, nlink=2,
                     user="root" if entry["uid"] == 0 else "alice", group="root" if entry["gid"] == 0 else "alice")
        return entry

    def op_filesystem_mkdir(self, a: dict[str, Any]) -> dict[str, Any]:
        path = self._fs_path("filesystem_mkdir", a["path"], must_exist=False)
        self.require(not self.path_exists(path), "filesystem_mkdir", f"{path} already exists")
        self.require(self.path_exists(posixpath.dirname(path)), "filesystem_mkdir",
                     f"parent {posixpath.dirname(path)} does not exist")
        self.require(self.dataset_for_path(path) is not None, "filesystem_mkdir", "path is not inside a dataset")
        self.directories.add(path)
        self.permissions[path] = {"mode": a.get("mode", "755")}
        return self._entry(path)

    def _perm_job(self, method: str, where: str, a: dict[str, Any], fields: tuple[str, ...]) -> int:
        path = self._fs_path(where, a["path"])
        changes = {k: a[k] for k in fields if k in a}

        def apply(job: Job) -> None:
            self.permissions.setdefault(path, {}).update(changes)

        return self.jobs.submit(method, [{"path": path, **changes}], on_success=apply).id

    def op_filesystem_set_permissions(self, a: dict[str, Any]) -> int:
        return self._perm_job("filesystem.setperm", "filesystem_set_permissions", a, ("mode", "uid", "gid"))

    def op_filesystem_chown(self, a: dict[str, Any]) -> int:
        return self._perm_job("filesystem.chown", "filesystem_chown", a, ("uid", "gid"))

    def op_filesystem_set_acl(self, a: dict[str, Any]) -> int:
        return self._perm_job("filesystem.setacl", "filesystem_set_acl", a, ("dacl", "acltype", "uid", "gid"))

    def op_filesystem_get_acl(self, a: dict[str, Any]) -> dict[str, Any]:
        path = self._fs_path("filesystem_get_acl", a["path"])
        entry = self._entry(path)
        dacl = self.permissions.get(path, {}).get("dacl")
        default = [{"tag": "USER_OBJ", "id": -1, "perms": {"READ": True, "WRITE": True, "EXECUTE": True},
                    "default": False},
                   {"tag": "GROUP_OBJ", "id": -1, "perms": {"READ": True, "WRITE": False, "EXECUTE": True},
                    "default": False},
                   {"tag": "OTHER", "id": -1, "perms": {"READ": True, "WRITE": False, "EXECUTE": True},
                    "default": False}]
        return {"path": path, "trivial": dacl is None, "acltype": "POSIX1E", "uid": entry["uid"],
                "gid": entry["gid"], "acl": dacl if dacl is not None else default}
