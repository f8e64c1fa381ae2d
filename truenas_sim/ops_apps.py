"""App (Docker) and virtual machine operations."""

from __future__ import annotations

import copy
import re
from typing import Any

from . import seed
from .base import StateBase, public
from .errors import invalid
from .jobs import Job

APP_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
CATALOG: list[dict[str, Any]] = [
    {"name": "plex", "title": "Plex", "train": "stable", "latest_version": "1.2.9", "categories": ["media"],
     "description": "Media server for films, series and music."},
    {"name": "nextcloud", "title": "Nextcloud", "train": "community", "latest_version": "2.1.0",
     "categories": ["productivity"], "description": "Self-hosted files, calendar and contacts."},
    {"name": "jellyfin", "title": "Jellyfin", "train": "community", "latest_version": "1.3.4",
     "categories": ["media"], "description": "Free software media server."},
    {"name": "immich", "title": "Immich", "train": "community", "latest_version": "1.6.2",
     "categories": ["media", "photos"], "description": "Photo and video backup."},
    {"name": "home-assistant", "title": "Home Assistant", "train": "community", "latest_version": "1.5.1",
     "categories": ["home-automation"], "description": "Home automation hub."},
    {"name": "syncthing", "title": "Syncthing", "train": "stable", "latest_version": "1.1.8",
     "categories": ["storage"], "description": "Continuous file synchronisation."},
]
VM_FIELDS = ("name", "description", "vcpus", "cores", "threads", "memory", "bootloader", "autostart", "time",
             "shutdown_timeout", "cpu_mode", "cpu_model", "machine_type", "hide_from_msr", "ensure_display_device",
             "arch_type", "hyperv_enlightenments")
VM_DEFAULTS: dict[str, Any] = {
    "description": "", "vcpus": 1, "cores": 1, "threads": 1, "min_memory": None, "bootloader": "UEFI",
    "autostart": True, "time": "LOCAL", "shutdown_timeout": 90, "cpu_mode": "CUSTOM", "cpu_model": None,
    "machine_type": None, "arch_type": None, "hide_from_msr": False, "ensure_display_device": True,
    "hyperv_enlightenments": False,
}


class AppVmOps(StateBase):
    # -- apps ---------------------------------------------------------------------------------

    def _app(self, name: str) -> dict[str, Any]:
        return self.lookup(self.apps, name, "app")

    def app_view(self, app: dict[str, Any]) -> dict[str, Any]:
        self.tick()
        view = public(app)
        view["active_workloads"]["containers"] = 1 if app["state"] == "RUNNING" else 0
        return view

    def op_app_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.app_view(x) for x in self.apps.values()]

    def op_app_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return self.app_view(self._app(a["id"]))

    def _app_job(self, method: str, app: dict[str, Any], interim: str | None, final: str | None,
                 extra: Any = None) -> int:
        name = app["name"]
        previous = app["state"]
        if interim:
            app["state"] = interim

        def done(job: Job) -> None:
            current = self._app(name)
            if final:
                current["state"] = final

        def ended(job: Job) -> None:
            if job.state != "SUCCESS" and name in self.apps and interim:
                self.apps[name]["state"] = previous

        args: list[Any] = [name] if extra is None else [name, extra]
        return self.jobs.submit(method, args, on_success=done, on_end=ended, lane=f"app:{name}").id

    def op_app_start(self, a: dict[str, Any]) -> int:
        return self._app_job("app.start", self._app(a["id"]), "DEPLOYING", "RUNNING")

    def op_app_stop(self, a: dict[str, Any]) -> int:
        return self._app_job("app.stop", self._app(a["id"]), "STOPPING", "STOPPED")

    def op_app_redeploy(self, a: dict[str, Any]) -> int:
        return self._app_job("app.redeploy", self._app(a["id"]), "DEPLOYING", "RUNNING")

    def op_app_create(self, a: dict[str, Any]) -> int:
        name = a["app_name"]
        self.require(bool(APP_NAME_RE.match(name)), "app_create.app_name", f"invalid app name {name!r}")
        self.require(name not in self.apps, "app_create.app_name", f"an app named {name!r} already exists")
        entry = next((c for c in CATALOG if c["name"] == a["catalog_app"]), None)
        self.require(entry is not None, "app_create.catalog_app", f"{a['catalog_app']!r} is not in the catalog")
        version = a.get("version") or entry["latest_version"]
        self.apps[name] = {
            "name": name, "id": name, "state": "DEPLOYING", "upgrade_available": version != entry["latest_version"],
            "image_updates_available": False, "custom_app": False, "migrated": False, "human_version": version,
            "version": version, "latest_version": entry["latest_version"],
            "metadata": {"name": entry["name"], "train": a.get("train") or entry["train"], "app_version": version},
            "active_workloads": {"containers": 0, "used_ports": []}, "notes": None, "portals": {},
            "config": copy.deepcopy(a.get("values") or {}),
        }
        self.app_history[name] = []

        def ended(job: Job) -> None:
            if job.state != "SUCCESS":
                self.apps.pop(name, None)

        def done(job: Job) -> dict[str, Any]:
            self._app(name)["state"] = "RUNNING"
            return self.app_view(self._app(name))

        return self.jobs.submit("app.create", [{"app_name": name, "catalog_app": a["catalog_app"]}],
                                on_success=done, on_end=ended, lane=f"app:{name}").id

    def op_app_update(self, a: dict[str, Any]) -> int:
        app = self._app(a["id"])

        def done(job: Job) -> dict[str, Any]:
            self._app(app["name"])["config"].update(copy.deepcopy(a["values"]))
            return self.app_view(self._app(app["name"]))

        return self.jobs.submit("app.update", [app["name"], a["values"]], on_success=done,
                                lane=f"app:{app['name']}").id

    def op_app_delete(self, a: dict[str, Any]) -> int:
        app = self._app(a["id"])

        def done(job: Job) -> bool:
            self.apps.pop(app["name"], None)
            self.clear_alerts(lambda al: f"app {app['name']} " in al["text"])
            return True

        return self.jobs.submit("app.delete", [app["name"]], on_success=done, lane=f"app:{app['name']}").id

    def op_app_upgrade(self, a: dict[str, Any]) -> int:
        app = self._app(a["id"])
        target = a.get("app_version") or app["latest_version"]
        self.require(target != app["version"], "app_upgrade", f"app {app['name']} is already at version {target}")

        def done(job: Job) -> dict[str, Any]:
            current = self._app(app["name"])
            self.app_history.setdefault(app["name"], []).append(current["version"])
            current.update(version=target, human_version=target, upgrade_available=target != current["latest_version"])
            current["metadata"]["app_version"] = target
            self.clear_alerts(lambda al: al["klass"] == "AppUpdate" and f"app {app['name']} " in al["text"])
            return self.app_view(current)

        return self.jobs.submit("app.upgrade", [app["name"], {"app_version": target}], on_success=done,
                                lane=f"app:{app['name']}").id

    def op_app_rollback(self, a: dict[str, Any]) -> int:
        app = self._app(a["id"])
        history = self.app_history.get(app["name"], [])
        self.require(a["app_version"] in history, "app_rollback.app_version",
                     f"no earlier version {a['app_version']!r} of {app['name']} to roll back to (have {history})")

        def done(job: Job) -> dict[str, Any]:
            current = self._app(app["name"])
            current.update(version=a["app_version"], human_version=a["app_version"],
                           upgrade_available=a["app_version"] != current["latest_version"])
            return self.app_view(current)

        return self.jobs.submit("app.rollback", [app["name"], {"app_version": a["app_version"]}],
                                on_success=done, lane=f"app:{app['name']}").id

    def op_app_available(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [{**copy.deepcopy(c), "installed": c["name"] in self.apps} for c in CATALOG]

    def op_app_categories(self, a: dict[str, Any]) -> list[str]:
        return sorted({cat for c in CATALOG for cat in c["categories"]})

    def op_app_outdated_images(self, a: dict[str, Any]) -> list[str]:
        app = self._app(a["app_name"])
        return [f"ix/{app['name']}:{app['latest_version']}"] if app["upgrade_available"] else []

    def op_app_pull_images(self, a: dict[str, Any]) -> int:
        app = self._app(a["app_name"])
        return self.jobs.submit("app.pull_images", [app["name"]], lane=f"app:{app['name']}").id

    # -- virtual machines ---------------------------------------------------------------------

    def _vm(self, vm_id: Any) -> dict[str, Any]:
        return self.lookup(self.vms, vm_id, "virtual machine")

    def vm_view(self, vm: dict[str, Any]) -> dict[str, Any]:
        self.tick()
        view = public(vm)
        view["devices"] = [public(d) for d in self.collections["vm_device"].values() if d["vm"] == vm["id"]]
        return view

    def op_vm_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.vm_view(v) for v in self.vms.values()]

    def op_vm_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return self.vm_view(self._vm(a["id"]))

    def _check_vm_name(self, where: str, name: str, skip: int | None = None) -> None:
        self.require(bool(re.match(r"^[A-Za-z0-9_]+$", name)), where, "only letters, digits and _ are allowed")
        taken = any(v["name"] == name and v["id"] != skip for v in self.vms.values())
        self.require(not taken, where, f"a VM named {name!r} already exists")

    def op_vm_create(self, a: dict[str, Any]) -> dict[str, Any]:
        self._check_vm_name("vm_create.name", a["name"])
        self.require(a["memory"] >= 20, "vm_create.memory", "at least 20 MiB of memory is needed")
        vm_id = self.next_id("vm", self.vms)
        vm = {"id": vm_id, **copy.deepcopy(VM_DEFAULTS), **{k: a[k] for k in VM_FIELDS if k in a},
              "status": {"state": "STOPPED", "pid": None, "domain_state": "SHUTOFF"}}
        self.vms[vm_id] = vm
        return self.vm_view(vm)

    def op_vm_update(self, a: dict[str, Any]) -> dict[str, Any]:
        vm = self._vm(a["id"])
        if "name" in a:
            self._check_vm_name("vm_update.name", a["name"], skip=vm["id"])
        vm.update({k: a[k] for k in VM_FIELDS if k in a})
        return self.vm_view(vm)

    def op_vm_delete(self, a: dict[str, Any]) -> bool:
        vm = self._vm(a["id"])
        self.require(vm["status"]["state"] != "RUNNING" or bool(a.get("force")), "vm_delete",
                     f"VM {vm['name']} is running; stop it first or pass force true")
        devices = self.collections["vm_device"]
        for dev_id in [i for i, d in devices.items() if d["vm"] == vm["id"]]:
            path = str(devices[dev_id]["attributes"].get("path", ""))
            zvol = path.removeprefix("/dev/zvol/")
            if a.get("zvols") and zvol in self.datasets and not self._has_dependants(zvol):
                self.grow_pool(self.datasets[zvol]["pool"], -self.datasets[zvol]["used"])
                del self.datasets[zvol]
            del devices[dev_id]
        del self.vms[vm["id"]]
        return True

    def _has_dependants(self, dataset: str) -> bool:
        return any(s["dataset"] == dataset for s in self.snapshots.values())

    def _set_vm_state(self, vm_id: int, running: bool) -> None:
        vm = self._vm(vm_id)
        vm["status"] = ({"state": "RUNNING", "pid": 40000 + vm_id, "domain_state": "RUNNING"} if running
                        else {"state": "STOPPED", "pid": None, "domain_state": "SHUTOFF"})

    def op_vm_start(self, a: dict[str, Any]) -> None:
        vm = self._vm(a["id"])
        self.require(vm["status"]["state"] != "RUNNING", "vm_start", f"VM {vm['name']} is already running")
        free = self._free_memory_mib()
        if not a.get("overcommit") and vm["memory"] > free:
            raise invalid("vm_start", f"{vm['memory']} MiB needed but only {free} MiB free; pass overcommit true")
        self._set_vm_state(vm["id"], True)
        return None

    def op_vm_stop(self, a: dict[str, Any]) -> int:
        vm = self._vm(a["id"])
        self.require(vm["status"]["state"] == "RUNNING", "vm_stop", f"VM {vm['name']} is not running")
        return self.jobs.submit("vm.stop", [vm["id"], {"force": a.get("force", False)}], lane=f"vm:{vm['id']}",
                                on_success=lambda job: self._set_vm_state(vm["id"], False)).id

    def op_vm_restart(self, a: dict[str, Any]) -> int:
        vm = self._vm(a["id"])
        return self.jobs.submit("vm.restart", [vm["id"]], lane=f"vm:{vm['id']}",
                                on_success=lambda job: self._set_vm_state(vm["id"], True)).id

    def op_vm_status(self, a: dict[str, Any]) -> dict[str, Any]:
        self.tick()
        return dict(self._vm(a["id"])["status"])

    def op_vm_clone(self, a: dict[str, Any]) -> bool:
        vm = self._vm(a["id"])
        copies = sum(1 for v in self.vms.values() if v["name"].startswith(vm["name"]))
        name = a.get("name") or f"{vm['name']}_clone{copies}"
        self._check_vm_name("vm_clone.name", name)
        new_id = self.next_id("vm", self.vms)
        self.vms[new_id] = {**copy.deepcopy(vm), "id": new_id, "name": name,
                            "status": {"state": "STOPPED", "pid": None, "domain_state": "SHUTOFF"}}
        devices = self.collections["vm_device"]
        for dev in [d for d in devices.values() if d["vm"] == vm["id"]]:
            dev_id = self.next_id("vm_device", devices)
            devices[dev_id] = {**copy.deepcopy(dev), "id": dev_id, "vm": new_id}
        return True

    def _free_memory_mib(self) -> int:
        used = sum(v["memory"] for v in self.vms.values() if v["status"]["state"] == "RUNNING")
        return self.system["physmem"] // seed.MiB - 8192 - used

    def op_vm_available_memory(self, a: dict[str, Any]) -> int:
        return self._free_memory_mib() * seed.MiB

    def op_vm_display_uri(self, a: dict[str, Any]) -> dict[str, Any]:
        vm = self._vm(a["id"])
        display = next((d for d in self.collections["vm_device"].values()
                        if d["vm"] == vm["id"] and d["attributes"].get("dtype") == "DISPLAY"), None)
        if display is None:
            return {"uri": None, "error": "This VM has no display device"}
        host, protocol = a.get("host") or seed.HOSTNAME, (a.get("protocol") or "HTTP").lower()
        return {"uri": f"{protocol}://{host}:{display['attributes'].get('port', 5900)}/spice_auto.html", "error": None}

    def op_vm_device_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        devices = self.collections["vm_device"].values()
        return [public(d) for d in devices if a.get("vm_id") is None or d["vm"] == a["vm_id"]]

    def op_vm_device_create(self, a: dict[str, Any]) -> dict[str, Any]:
        self._vm(a["vm"])
        devices = self.collections["vm_device"]
        dev_id = self.next_id("vm_device", devices)
        devices[dev_id] = {"id": dev_id, "vm": a["vm"], "order": a.get("order", 1000 + dev_id),
                           "attributes": {"dtype": a["dtype"], **copy.deepcopy(a.get("attributes") or {})}}
        return public(devices[dev_id])
