"""Storage operations: pools, datasets and zvols, snapshots, periodic snapshot tasks."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from . import seed
from .base import StateBase, public
from .errors import ApiError, invalid, not_found
from .jobs import Job, date

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
VDEV_MIN_DISKS = {"STRIPE": 1, "MIRROR": 2, "RAIDZ1": 3, "RAIDZ2": 4, "RAIDZ3": 5}
DATASET_PROPS = ("compression", "atime", "dedup", "recordsize", "readonly", "sync", "exec", "copies",
                 "aclmode", "acltype", "casesensitivity", *seed.SIZE_PROPS)


def humanize(size: int | None) -> str | None:
    """ZFS-style short size: 1.62T, 180G, 96K."""
    if size is None:
        return None
    value = float(size)
    for unit in ("B", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            return f"{int(value)}{unit}" if unit == "B" or value >= 100 else f"{value:.3g}{unit}"
        value /= 1024
    return str(size)


def prop(parsed: Any, source: str, *, size: bool = False) -> dict[str, Any]:
    shown = humanize(parsed) if size else parsed
    if size and not parsed:
        shown = "none" if source != "NONE" else "0B"
    return {"parsed": parsed, "rawvalue": "" if parsed is None else str(parsed), "value": shown, "source": source}


def parent_of(name: str) -> str | None:
    return name.rsplit("/", 1)[0] if "/" in name else None


class StorageOps(StateBase):
    # -- pools --------------------------------------------------------------------------------

    def _pool(self, pool_id: Any) -> dict[str, Any]:
        return self.lookup(self.pools, pool_id, "pool")

    def _pool_named(self, name: str) -> dict[str, Any]:
        pool = next((p for p in self.pools.values() if p["name"] == name), None)
        if pool is None:
            raise not_found("pool", name)
        return pool

    def pool_view(self, pool: dict[str, Any]) -> dict[str, Any]:
        self.tick()
        view = public(pool)
        view["free"] = pool["size"] - pool["allocated"]
        return view

    def op_pool_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.pool_view(p) for p in self.pools.values()]

    def op_pool_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return self.pool_view(self._pool(a["id"]))

    def op_pool_status(self, a: dict[str, Any]) -> dict[str, Any]:
        view = self.pool_view(self._pool(a["id"]))
        return {k: view[k] for k in ("id", "name", "status", "healthy", "warning", "status_code",
                                     "status_detail", "scan", "topology")}

    def _usable_fraction(self, pool: dict[str, Any]) -> float:
        vdevs = pool["topology"]["data"]
        if not vdevs:
            return 1.0
        kind, count = vdevs[0]["type"], max(1, len(vdevs[0]["children"]))
        parity = {"RAIDZ1": 1, "RAIDZ2": 2, "RAIDZ3": 3}.get(kind, 0)
        return 1 / count if kind == "MIRROR" else (count - parity) / count

    def _disk(self, key: str) -> dict[str, Any]:
        disk = self.disks.get(key) or next((d for d in self.disks.values() if d["name"] == key), None)
        if disk is None:
            raise not_found("disk", key)
        return disk

    def _check_free_disks(self, where: str, names: list[str]) -> list[dict[str, Any]]:
        disks = []
        for name in names:
            try:
                disk = self._disk(name)
            except ApiError:
                raise invalid(where, f"disk {name!r} does not exist") from None
            if disk["pool"] is not None:
                raise invalid(where, f"disk {disk['name']} is in use by pool {disk['pool']}")
            disks.append(disk)
        if len({d["name"] for d in disks}) != len(disks):
            raise invalid(where, "the same disk is listed twice")
        return disks

    def _vdevs(self, where: str, topology: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
        out = []
        for vdev in topology.get("data", []):
            kind = str(vdev["type"]).upper()
            if kind not in VDEV_MIN_DISKS:
                raise invalid(where, f"unknown vdev type {vdev['type']!r}; use one of {sorted(VDEV_MIN_DISKS)}")
            if len(vdev["disks"]) < VDEV_MIN_DISKS[kind]:
                raise invalid(where, f"a {kind} vdev needs at least {VDEV_MIN_DISKS[kind]} disks")
            out.append((kind, self._check_free_disks(where, vdev["disks"])))
        return out

    @staticmethod
    def _vdev_record(index: int, kind: str, disks: list[dict[str, Any]]) -> dict[str, Any]:
        children = [{"name": seed.fake_id("part", d["name"], length=36), "type": "DISK", "path": f"/dev/{d['name']}1",
                     "guid": d["zfs_guid"], "status": "ONLINE", "disk": d["name"], "unavail_disk": None,
                     "stats": {"read_errors": 0, "write_errors": 0, "checksum_errors": 0}, "children": []}
                    for d in disks]
        return {"name": f"{kind.lower()}-{index}", "type": kind, "path": None, "guid": seed.fake_id(kind, index),
                "status": "ONLINE", "children": children,
                "stats": {"read_errors": 0, "write_errors": 0, "checksum_errors": 0}}

    def op_pool_create(self, a: dict[str, Any]) -> int:
        name = a["name"]
        self.require(bool(NAME_RE.match(name)) and name not in ("mnt", "boot-pool"), "pool_create.name",
                     f"invalid pool name {name!r}")
        self.require(all(p["name"] != name for p in self.pools.values()), "pool_create.name",
                     f"a pool named {name!r} already exists")
        self.require(bool(a["topology"].get("data")), "pool_create.topology", "at least one data vdev is needed")
        vdevs = self._vdevs("pool_create.topology", a["topology"])
        for _, disks in vdevs:
            for disk in disks:
                disk["pool"] = name  # reserved while the job runs
        return self.jobs.submit("pool.create", [a], on_success=lambda job: self._finish_pool_create(name, vdevs),
                                on_end=lambda job: self._release_disks(name, job)).id

    def _release_disks(self, name: str, job: Job) -> None:
        if job.state != "SUCCESS" and all(p["name"] != name for p in self.pools.values()):
            for disk in self.disks.values():
                if disk["pool"] == name:
                    disk["pool"] = None

    def _finish_pool_create(self, name: str, vdevs: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
        pool_id = self.next_id("pool", self.pools)
        size = sum(d["size"] for _, disks in vdevs for d in disks)
        pool = public(next(iter(self.pools.values()))) if self.pools else seed.pool_tank([])
        pool.update(id=pool_id, name=name, guid=seed.fake_id("pool", name, length=19), path=f"/mnt/{name}",
                    size=size, allocated=0, free=size, fragmentation="0", autotrim={"value": "off"},
                    scan={"function": None, "state": None, "percentage": None, "errors": 0, "pause": None})
        pool["topology"] = {"data": [self._vdev_record(i, k, d) for i, (k, d) in enumerate(vdevs)],
                            "log": [], "cache": [], "spare": [], "special": [], "dedup": []}
        self.pools[pool_id] = pool
        self.datasets[name] = {"name": name, "pool": name, "type": "FILESYSTEM", "used": 0, "volsize": None,
                               "encrypted": False, "locked": False, "origin": None, "txg": self.next_txg(),
                               "props": {"compression": "LZ4"}, "comments": ""}
        return self.pool_view(pool)

    def op_pool_update(self, a: dict[str, Any]) -> int:
        pool = self._pool(a["id"])
        vdevs = self._vdevs("pool_update.topology", a.get("topology") or {})
        for _, disks in vdevs:
            for disk in disks:
                disk["pool"] = pool["name"]

        def apply(job: Job) -> dict[str, Any]:
            if "autotrim" in a:
                pool["autotrim"] = {"value": "on" if a["autotrim"] else "off"}
            start = len(pool["topology"]["data"])
            for i, (kind, disks) in enumerate(vdevs):
                pool["topology"]["data"].append(self._vdev_record(start + i, kind, disks))
                pool["size"] += sum(d["size"] for d in disks)
            return self.pool_view(pool)

        return self.jobs.submit("pool.update", [pool["id"], a], on_success=apply).id

    def op_pool_scrub(self, a: dict[str, Any]) -> int | None:
        pool, action = self._pool(a["id"]), a["action"]
        self.tick()
        running = pool["scan"].get("state") == "SCANNING"
        if action == "START":
            self.require(not running, "pool_scrub", f"a scrub of pool {pool['name']} is already running")
            pool["scan"] = {"function": "SCRUB", "state": "SCANNING", "start_time": date(self.now()),
                            "end_time": None, "percentage": 0.0, "bytes_to_process": pool["allocated"],
                            "bytes_processed": 0, "errors": 0, "pause": None}
            job = self.jobs.submit("pool.scrub", [pool["id"], "START"], lane=f"scrub:{pool['id']}",
                                   on_progress=lambda j: self._scrub_progress(pool, j),
                                   on_success=lambda j: self._scrub_done(pool))
            self.scrub_jobs[pool["id"]] = job.id
            return job.id
        self.require(running, "pool_scrub", f"no scrub of pool {pool['name']} is running")
        self.jobs.abort(self.scrub_jobs[pool["id"]])
        if action == "STOP":
            pool["scan"].update(state="CANCELED", end_time=date(self.now()))
        else:
            pool["scan"].update(state="PAUSED", pause=date(self.now()))
        return None

    @staticmethod
    def _scrub_progress(pool: dict[str, Any], job: Job) -> None:
        if pool["scan"].get("state") == "SCANNING":
            pool["scan"]["percentage"] = round(job.percent, 1)
            pool["scan"]["bytes_processed"] = int(pool["allocated"] * job.percent / 100)

    def _scrub_done(self, pool: dict[str, Any]) -> None:
        pool["scan"].update(state="FINISHED", percentage=100.0, bytes_processed=pool["allocated"],
                            end_time=date(self.now()))

    def op_pool_export(self, a: dict[str, Any]) -> int:
        pool = self._pool(a["id"])
        name = pool["name"]
        return self.jobs.submit("pool.export", [pool["id"], {"cascade": a["cascade"], "destroy": a["destroy"]}],
                                on_success=lambda job: self._finish_export(pool["id"], name, a["cascade"])).id

    def _finish_export(self, pool_id: int, name: str, cascade: bool) -> None:
        self.pools.pop(pool_id, None)
        prefix = f"/mnt/{name}"
        inside = lambda path: path == prefix or path.startswith(prefix + "/")  # noqa: E731
        for table in (self.smb_shares, self.nfs_shares):
            for key in [k for k, s in table.items() if inside(s["path"])]:
                del table[key]
        for key in [k for k, d in self.datasets.items() if d["pool"] == name]:
            del self.datasets[key]
        for key in [k for k, s in self.snapshots.items() if s["pool"] == name]:
            del self.snapshots[key]
        self.directories = {d for d in self.directories if not inside(d)}
        if cascade:
            for table in (self.cloudsync_tasks, self.cloud_backup_tasks):
                for key in [k for k, t in table.items() if inside(t["path"])]:
                    del table[key]
            for key in [k for k, t in self.snapshot_tasks.items() if t["dataset"].split("/")[0] == name]:
                del self.snapshot_tasks[key]
        for disk in self.disks.values():
            if disk["pool"] == name:
                disk["pool"] = None
        if self.configs["docker"].get("pool") == name:
            self.configs["docker"]["pool"] = None

    def op_pool_attachments(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        pool = self._pool(a["id"])
        prefix = f"/mnt/{pool['name']}/"
        groups = [
            ("SMB Share", "cifs", [s["name"] for s in self.smb_shares.values() if s["path"].startswith(prefix)]),
            ("NFS Share", "nfs", [s["path"] for s in self.nfs_shares.values() if s["path"].startswith(prefix)]),
            ("Snapshot Task", None, [t["dataset"] for t in self.snapshot_tasks.values()
                                     if t["dataset"].split("/")[0] == pool["name"]]),
            ("CloudSync Task", None, [t["description"] for t in self.cloudsync_tasks.values()
                                      if t["path"].startswith(prefix)]),
            ("Cloud Backup Task", None, [t["description"] for t in self.cloud_backup_tasks.values()
                                         if t["path"].startswith(prefix)]),
            ("Applications", "docker", sorted(self.apps) if self.configs["docker"].get("pool") == pool["name"] else []),
            ("Virtual Machine", None, [v["name"] for v in self.vms.values()]),
        ]
        return [{"type": t, "service": s, "attachments": names} for t, s, names in groups if names]

    def op_pool_get_disks(self, a: dict[str, Any]) -> list[str]:
        pool = self._pool(a["id"])
        return sorted(d["name"] for d in self.disks.values() if d["pool"] == pool["name"])

    def op_pool_replace_disk(self, a: dict[str, Any]) -> int:
        pool = self._pool(a["id"])
        members = [c for v in pool["topology"]["data"] for c in v["children"]]
        old = next((c for c in members if a["label"] in (c["guid"], c["name"], c["disk"])), None)
        if old is None:
            raise invalid("pool_replace_disk.label", f"{a['label']!r} is not a member of pool {pool['name']}")
        new_disk = self._check_free_disks("pool_replace_disk.disk", [a["disk"]])[0]
        new_disk["pool"] = pool["name"]
        old_name = old["disk"]

        def apply(job: Job) -> None:
            old.update(disk=new_disk["name"], guid=new_disk["zfs_guid"], path=f"/dev/{new_disk['name']}1")
            self._disk(old_name)["pool"] = None
            self.clear_alerts(lambda al: f"/dev/{old_name} " in al["text"])

        return self.jobs.submit("pool.replace", [pool["id"], {"label": a["label"], "disk": a["disk"]}],
                                on_success=apply).id

    # -- datasets -----------------------------------------------------------------------------

    def _ds(self, name: str) -> dict[str, Any]:
        return self.lookup(self.datasets, name, "dataset")

    def _children(self, name: str) -> list[str]:
        return sorted(n for n in self.datasets if parent_of(n) == name)

    def _descendants(self, name: str) -> list[str]:
        return sorted(n for n in self.datasets if n.startswith(name + "/"))

    def _effective(self, ds: dict[str, Any], key: str) -> tuple[Any, str]:
        if ds["props"].get(key) is not None:
            return ds["props"][key], "LOCAL"
        if key in seed.SIZE_PROPS:
            return 0, "DEFAULT"
        parent = parent_of(ds["name"])
        while parent:
            pds = self.datasets.get(parent)
            if pds is not None and pds["props"].get(key) is not None:
                return pds["props"][key], "INHERITED"
            parent = parent_of(parent)
        return seed.DEFAULT_PROPS.get(key), "DEFAULT"

    def _used_total(self, name: str) -> int:
        own = self.datasets[name]["used"]
        snaps = sum(s["used"] for s in self.snapshots.values() if s["dataset"] == name)
        return own + snaps + sum(self._used_total(c) for c in self._children(name))

    def _available(self, ds: dict[str, Any]) -> int:
        pool = next((p for p in self.pools.values() if p["name"] == ds["pool"]), None)
        avail = int((pool["size"] - pool["allocated"]) * self._usable_fraction(pool)) if pool else 0
        name: str | None = ds["name"]
        while name:
            quota = self.datasets[name]["props"].get("quota") or 0
            if quota:
                avail = min(avail, max(0, quota - self._used_total(name)))
            name = parent_of(name)
        return avail

    def dataset_view(self, ds: dict[str, Any]) -> dict[str, Any]:
        name = ds["name"]
        view: dict[str, Any] = {
            "id": name, "type": ds["type"], "name": name, "pool": ds["pool"], "encrypted": ds["encrypted"],
            "encryption_root": name if ds["encrypted"] else None, "key_loaded": ds["encrypted"] and not ds["locked"],
            "locked": ds["locked"], "children": self._children(name), "mountpoint": self.mountpoint(ds),
            "comments": prop(ds["comments"], "LOCAL" if ds["comments"] else "DEFAULT"),
            "used": prop(self._used_total(name), "NONE", size=True),
            "available": prop(self._available(ds), "NONE", size=True),
            "origin": prop(ds["origin"] or "", "NONE"),
            "snapshot_count": sum(1 for s in self.snapshots.values() if s["dataset"] == name),
        }
        for key in DATASET_PROPS:
            if key == "recordsize" and ds["type"] == "VOLUME":
                continue
            value, source = self._effective(ds, key)
            view[key] = prop(value, source, size=key in seed.SIZE_PROPS)
        if ds["type"] == "VOLUME":
            view["volsize"] = prop(ds["volsize"], "LOCAL", size=True)
            view["volblocksize"] = prop("16K", "DEFAULT")
        return view

    def op_dataset_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        pool = a.get("pool")
        return [self.dataset_view(d) for n, d in sorted(self.datasets.items()) if not pool or d["pool"] == pool]

    def op_dataset_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return self.dataset_view(self._ds(a["id"]))

    def _check_sizes(self, where: str, a: dict[str, Any], used: int = 0) -> None:
        for key in seed.SIZE_PROPS:
            value = a.get(key)
            if value is None:
                continue
            self.require(value >= 0 and int(value) == value, f"{where}.{key}", "must be a whole number of bytes")
            if key in ("quota", "refquota"):
                self.require(value == 0 or value >= seed.GiB, f"{where}.{key}", "must be 0 or at least 1 GiB")
                self.require(value == 0 or value >= used, f"{where}.{key}",
                             f"{value} bytes is less than the {used} bytes already used")

    def op_dataset_create(self, a: dict[str, Any]) -> dict[str, Any]:
        name, kind = a["name"].strip("/"), a.get("type", "FILESYSTEM")
        parent = parent_of(name)
        self.require(parent is not None, "dataset_create.name", "give the full name, like <pool>/<dataset>")
        self.require(all(NAME_RE.match(part) for part in name.split("/")), "dataset_create.name",
                     f"invalid dataset name {name!r}")
        self.require(name not in self.datasets, "dataset_create.name", f"dataset {name!r} already exists")
        self.require(parent in self.datasets, "dataset_create.name", f"parent dataset {parent!r} does not exist")
        pds = self.datasets[parent]
        self.require(pds["type"] == "FILESYSTEM", "dataset_create.name", f"{parent!r} is a zvol, not a dataset")
        self.require(not pds["locked"], "dataset_create.name", f"parent {parent!r} is locked")
        if kind == "VOLUME":
            self.require(bool(a.get("volsize")), "dataset_create.volsize", "a VOLUME needs volsize")
            self.require(a["volsize"] <= self._available(pds), "dataset_create.volsize",
                         "not enough free space in the pool")
        else:
            self.require(a.get("volsize") is None, "dataset_create.volsize", "only a VOLUME takes volsize")
        self._check_sizes("dataset_create", a)
        props = {k: a[k] for k in DATASET_PROPS if a.get(k) is not None}
        used = int(a["volsize"]) if kind == "VOLUME" else 96 * seed.KiB
        encrypted = bool(a.get("encryption")) or (a.get("inherit_encryption", True) and pds["encrypted"])
        ds = {"name": name, "pool": pds["pool"], "type": kind, "used": used,
              "volsize": int(a["volsize"]) if kind == "VOLUME" else None, "encrypted": encrypted,
              "locked": False, "origin": None, "txg": self.next_txg(), "props": props, "comments": ""}
        self.datasets[name] = ds
        self.grow_pool(ds["pool"], used)
        return self.dataset_view(ds)

    def op_dataset_update(self, a: dict[str, Any]) -> dict[str, Any]:
        ds = self._ds(a["id"])
        self._check_sizes("dataset_update", a, self._used_total(ds["name"]))
        for key in DATASET_PROPS:
            if key in a:
                ds["props"][key] = a[key]
        return self.dataset_view(ds)

    def op_dataset_delete(self, a: dict[str, Any]) -> bool:
        ds = self._ds(a["id"])
        name = ds["name"]
        self.require(parent_of(name) is not None, "dataset_delete",
                     f"{name!r} is the root dataset of a pool; export the pool instead")
        doomed = [name, *self._descendants(name)]
        snaps = [s for s, v in self.snapshots.items() if v["dataset"] in doomed]
        if not a.get("recursive"):
            kids = self._children(name)
            own = [s for s in snaps if self.snapshots[s]["dataset"] == name]
            self.require(not kids, "dataset_delete", f"{name!r} has children {kids}; pass recursive true")
            self.require(not own, "dataset_delete", f"{name!r} has {len(own)} snapshots; pass recursive true")
        clones = [d["name"] for d in self.datasets.values() if d["origin"] in snaps and d["name"] not in doomed]
        self.require(not clones, "dataset_delete", f"snapshots of {name!r} have dependent clones {clones}")
        freed = sum(self.datasets[d]["used"] for d in doomed) + sum(self.snapshots[s]["used"] for s in snaps)
        for s in snaps:
            del self.snapshots[s]
        for d in doomed:
            del self.datasets[d]
        prefix = f"/mnt/{name}"
        for table in (self.smb_shares, self.nfs_shares):
            for key in [k for k, sh in table.items() if sh["path"] == prefix or sh["path"].startswith(prefix + "/")]:
                del table[key]
        self.directories = {d for d in self.directories if not d.startswith(prefix + "/")}
        self.grow_pool(ds["pool"], -freed)
        return True

    def op_dataset_promote(self, a: dict[str, Any]) -> None:
        ds = self._ds(a["id"])
        self.require(bool(ds["origin"]), "dataset_promote", f"{ds['name']!r} is not a clone")
        ds["origin"] = None
        return None

    def op_dataset_lock(self, a: dict[str, Any]) -> bool:
        ds = self._ds(a["id"])
        self.require(ds["encrypted"], "dataset_lock", f"{ds['name']!r} is not encrypted")
        self.require(not ds["locked"], "dataset_lock", f"{ds['name']!r} is already locked")
        for name in [ds["name"], *self._descendants(ds["name"])]:
            if self.datasets[name]["encrypted"]:
                self.datasets[name]["locked"] = True
        return True

    def op_dataset_unlock(self, a: dict[str, Any]) -> dict[str, Any]:
        ds = self._ds(a["id"])
        options = a.get("unlock_options") or {}
        self.require(ds["encrypted"] and ds["locked"], "dataset_unlock", f"{ds['name']!r} is not locked")
        self.require(bool(options.get("passphrase") or options.get("key")), "dataset_unlock",
                     "give a passphrase or a key in unlock_options")
        names = [ds["name"], *(self._descendants(ds["name"]) if options.get("recursive") else [])]
        unlocked = [n for n in names if self.datasets[n]["locked"]]
        for n in unlocked:
            self.datasets[n]["locked"] = False
        return {"unlocked": unlocked, "failed": {}}

    def op_dataset_encryption_summary(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        ds = self._ds(a["id"])
        rows = []
        for name in [ds["name"], *self._descendants(ds["name"])]:
            d = self.datasets[name]
            if d["encrypted"]:
                rows.append({"name": name, "key_format": "PASSPHRASE", "key_present_in_database": False,
                             "valid_key": not d["locked"], "locked": d["locked"], "unlock_error": None,
                             "unlock_successful": not d["locked"]})
        return rows

    def op_dataset_get_quota(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        self._ds(a["id"])
        return [q for q in self.quotas.get(a["id"], []) if q["quota_type"] == a["quota_type"]]

    def op_dataset_set_quota(self, a: dict[str, Any]) -> None:
        self._ds(a["id"])
        current = {(q["quota_type"], q["id"]): q for q in self.quotas.get(a["id"], [])}
        for q in a["quotas"]:
            if q["quota_value"] == 0:
                current.pop((q["quota_type"], q["id"]), None)
            else:
                current[(q["quota_type"], q["id"])] = {**q, "used_bytes": 0, "obj_used": 0}
        self.quotas[a["id"]] = list(current.values())
        return None

    def op_dataset_set_permissions(self, a: dict[str, Any]) -> bool:
        ds = self._ds(a["id"])
        self.require(ds["type"] == "FILESYSTEM", "dataset_set_permissions", "a zvol has no permissions")
        self.permissions[self.mountpoint(ds) or ""] = {k: v for k, v in a.items() if k != "id"}
        return True

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_view(self, snap: dict[str, Any]) -> dict[str, Any]:
        created = datetime.fromtimestamp(snap["created"], tz=UTC)
        return {
            "id": snap["id"], "name": snap["id"], "pool": snap["pool"], "type": "SNAPSHOT",
            "snapshot_name": snap["snapshot_name"], "dataset": snap["dataset"], "createtxg": str(snap["txg"]),
            "holds": dict(snap["holds"]), "retention": None,
            "properties": {
                "used": prop(snap["used"], "NONE", size=True),
                "referenced": prop(snap["referenced"], "NONE", size=True),
                "creation": {"parsed": date(snap["created"]), "rawvalue": str(int(snap["created"])),
                             "value": created.strftime("%a %b %d %H:%M %Y"), "source": "NONE"},
            },
        }

    def _snap(self, snap_id: str) -> dict[str, Any]:
        return self.lookup(self.snapshots, snap_id, "snapshot")

    def op_snapshot_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        dataset = a.get("dataset")
        snaps = sorted((s for s in self.snapshots.values() if not dataset or s["dataset"] == dataset),
                       key=lambda s: (s["dataset"], s["txg"]))
        offset = int(a.get("offset") or 0)
        limit = a.get("limit")
        snaps = snaps[offset:offset + int(limit)] if limit else snaps[offset:]
        return [self.snapshot_view(s) for s in snaps]

    def op_snapshot_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return self.snapshot_view(self._snap(a["id"]))

    def op_snapshot_create(self, a: dict[str, Any]) -> dict[str, Any]:
        ds, name = self._ds(a["dataset"]), a["name"]
        self.require(bool(NAME_RE.match(name)), "snapshot_create.name", f"invalid snapshot name {name!r}")
        targets = [ds["name"], *(self._descendants(ds["name"]) if a.get("recursive") else [])]
        for target in targets:
            self.require(f"{target}@{name}" not in self.snapshots, "snapshot_create.name",
                         f"snapshot {target}@{name} already exists")
        txg = self.next_txg()
        for target in targets:
            self._add_snapshot(target, name, txg=txg)
        return self.snapshot_view(self.snapshots[f"{ds['name']}@{name}"])

    def _clones_of(self, snap_id: str) -> list[str]:
        return sorted(d["name"] for d in self.datasets.values() if d["origin"] == snap_id)

    def op_snapshot_delete(self, a: dict[str, Any]) -> bool:
        snap = self._snap(a["id"])
        clones = self._clones_of(snap["id"])
        self.require(not clones, "snapshot_delete",
                     f"snapshot {snap['id']} has dependent clones {clones}; delete or promote them first")
        del self.snapshots[snap["id"]]
        self.grow_pool(snap["pool"], -snap["used"])
        return True

    def op_snapshot_clone(self, a: dict[str, Any]) -> bool:
        snap, dst = self._snap(a["id"]), a["dataset_dst"].strip("/")
        self.require(dst not in self.datasets, "snapshot_clone.dataset_dst", f"dataset {dst!r} already exists")
        parent = parent_of(dst)
        self.require(parent is not None and parent in self.datasets, "snapshot_clone.dataset_dst",
                     f"parent dataset {parent!r} does not exist")
        self.require(dst.split("/")[0] == snap["pool"], "snapshot_clone.dataset_dst",
                     "a clone must be in the same pool as its snapshot")
        source = self.datasets[snap["dataset"]]
        self.datasets[dst] = {"name": dst, "pool": snap["pool"], "type": source["type"], "used": 64 * seed.KiB,
                              "volsize": source["volsize"], "encrypted": source["encrypted"], "locked": False,
                              "origin": snap["id"], "txg": self.next_txg(), "props": {}, "comments": ""}
        return True

    def op_snapshot_rollback(self, a: dict[str, Any]) -> None:
        snap = self._snap(a["id"])
        newer = sorted((s for s in self.snapshots.values()
                        if s["dataset"] == snap["dataset"] and s["txg"] > snap["txg"]), key=lambda s: s["txg"])
        if newer and not a.get("recursive"):
            raise invalid("snapshot_rollback", f"{len(newer)} newer snapshots of {snap['dataset']} exist "
                          f"(latest {newer[-1]['id']}); pass recursive true to destroy them")
        for s in newer:
            clones = self._clones_of(s["id"])
            self.require(not clones or bool(a.get("recursive_clones")), "snapshot_rollback",
                         f"newer snapshot {s['id']} has clones {clones}; pass recursive_clones true")
        for s in newer:
            for clone in self._clones_of(s["id"]):
                self.datasets.pop(clone, None)
            del self.snapshots[s["id"]]
        self.datasets[snap["dataset"]]["used"] = snap["referenced"]
        return None

    # -- periodic snapshot tasks --------------------------------------------------------------

    def op_snapshot_task_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [public(t) for t in self.snapshot_tasks.values()]

    def op_snapshot_task_create(self, a: dict[str, Any]) -> dict[str, Any]:
        self._ds(a["dataset"])
        schema = a.get("naming_schema") or "auto-%Y-%m-%d_%H-%M"
        missing = [c for c in ("%Y", "%m", "%d", "%H", "%M") if c not in schema]
        self.require(not missing, "snapshot_task_create.naming_schema", f"must contain {' '.join(missing)}")
        task_id = self.next_id("snapshot_task", self.snapshot_tasks)
        schedule = {"minute": "0", "hour": "*", "dom": "*", "month": "*", "dow": "*",
                    "begin": "00:00", "end": "23:59", **(a.get("schedule") or {})}
        task = {"id": task_id, "dataset": a["dataset"], "recursive": a.get("recursive", False),
                "lifetime_value": a.get("lifetime_value", 2), "lifetime_unit": a.get("lifetime_unit", "WEEK"),
                "enabled": a.get("enabled", True), "exclude": a.get("exclude", []), "naming_schema": schema,
                "allow_empty": a.get("allow_empty", True), "schedule": schedule, "vmware_sync": False,
                "state": {"state": "PENDING"}}
        self.snapshot_tasks[task_id] = task
        return public(task)

    def op_snapshot_task_delete(self, a: dict[str, Any]) -> bool:
        self.lookup(self.snapshot_tasks, a["id"], "snapshot task")
        del self.snapshot_tasks[a["id"]]
        return True

    def op_snapshot_task_run(self, a: dict[str, Any]) -> None:
        task = self.lookup(self.snapshot_tasks, a["id"], "snapshot task")
        self._ds(task["dataset"])
        name = datetime.fromtimestamp(self.now(), tz=UTC).strftime(task["naming_schema"])
        targets = [task["dataset"], *(self._descendants(task["dataset"]) if task["recursive"] else [])]
        txg = self.next_txg()
        for target in targets:
            if f"{target}@{name}" not in self.snapshots and target not in task["exclude"]:
                self._add_snapshot(target, name, txg=txg)
        task["state"] = {"state": "FINISHED", "datetime": date(self.now())}
        return None
