"""Answers for the actions without hand-written behaviour.

Each such action is handled by its verb: list/get/create/update/delete on a seeded collection,
config/config_update on a seeded settings object, a fixed plausible answer for the read-only
helpers, and a background job (applying its change when the job succeeds) where TrueNAS runs one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from . import seed
from .base import StateBase, public
from .catalogue import ToolSpec, split_action
from .errors import ApiError

COLLECTION_OF: dict[str, str] = {"system_ntp_servers": "system_ntp_server"}
STRING_KEYS: dict[str, str] = {"network_interface": "name", "bootenv": "name"}
OTHER_VERBS_NEEDING_ID = ("activate", "keep", "test", "run", "restore")


def _config_key(name: str) -> str | None:
    for suffix in ("_config_update", "_config_set", "_config", "_update"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _strip(a: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in a.items() if k not in ("id", "confirm")}


def _job_args(a: dict[str, Any]) -> list[Any]:
    args = {k: copy.deepcopy(v) for k, v in a.items() if k != "confirm"}
    return [args] if args else []


class GenericOps(StateBase):
    def generic(self, spec: ToolSpec, a: dict[str, Any]) -> Any:
        fixture = FIXTURES.get(spec.name)
        if fixture is not None:
            return fixture(self, a)
        base, verb = split_action(spec.name)
        collection = COLLECTION_OF.get(spec.name, base)
        if spec.name in COLLECTION_OF:
            verb = "list"
        if collection in self.collections:
            return self._collection_op(spec, collection, verb, a)
        key = _config_key(spec.name)
        if key is not None and key in self.configs:
            return self._config_op(spec, key, a)
        return self._plain(spec, a)

    # -- collections --------------------------------------------------------------------------

    def _collection_op(self, spec: ToolSpec, name: str, verb: str, a: dict[str, Any]) -> Any:
        table = self.collections[name]
        if verb == "list":
            return [public(item) for item in table.values()]
        if verb == "create":
            return self._maybe_job(spec, a, lambda: self._create_item(name, a))
        item = self.lookup(table, a.get("id"), name.replace("_", " ")) if "id" in spec.properties else None
        if verb == "get" and item is not None:
            return public(item)
        if verb == "update" and item is not None:
            return self._maybe_job(spec, a, lambda: public(self._merge(item, a)))
        if verb == "delete" and item is not None:
            return self._maybe_job(spec, a, lambda: table.pop(item["id"]) is not None)
        return self._other_verb(spec, name, item, a)

    def _create_item(self, name: str, a: dict[str, Any]) -> dict[str, Any]:
        table = self.collections[name]
        key_field = STRING_KEYS.get(name)
        if key_field is not None:
            key = str(a.get(key_field) or f"{name}{len(table)}")
            if key in table:
                raise ApiError(422, f"[EEXIST] {name.replace('_', ' ')} {key!r} already exists")
        else:
            key = self.next_id(name, table)
        item = {"id": key, **_strip(a)}
        table[key] = item
        return public(item)

    @staticmethod
    def _merge(item: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
        item.update(_strip(a))
        return item

    def _other_verb(self, spec: ToolSpec, name: str, item: dict[str, Any] | None, a: dict[str, Any]) -> Any:
        if spec.name == "bootenv_activate" and item is not None:
            for other in self.collections[name].values():
                other["activated"] = other is item
            return True
        if spec.name == "bootenv_keep" and item is not None:
            item["keep"] = a["keep"]
            return True
        if spec.job:
            return self.jobs.submit(spec.method, [a.get("id")], lane=f"{spec.name}:{a.get('id')}").id
        return True

    # -- settings objects ---------------------------------------------------------------------

    def _config_op(self, spec: ToolSpec, key: str, a: dict[str, Any]) -> Any:
        config = self.configs[key]
        changes = dict(a.get("config") or {}) if spec.name == "directory_services_update" else _strip(a)
        if not changes and spec.name.endswith("_config"):
            return copy.deepcopy(config)
        return self._maybe_job(spec, a, lambda: copy.deepcopy(self._merge(config, changes)))

    # -- everything else ----------------------------------------------------------------------

    def _maybe_job(self, spec: ToolSpec, a: dict[str, Any], apply: Callable[[], Any]) -> Any:
        if not spec.job:
            return apply()
        return self.jobs.submit(spec.method, _job_args(a), on_success=lambda job: apply()).id

    def _plain(self, spec: ToolSpec, a: dict[str, Any]) -> Any:
        if spec.job:
            return self.jobs.submit(spec.method, _job_args(a)).id
        return None


def _audit(state: GenericOps, a: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for entry in list(state.call_log)[-50:]:
        rows.append({"audit_id": seed.fake_id("audit", entry["seq"], length=32), "service": "MIDDLEWARE",
                     "event": "METHOD_CALL", "message_timestamp": entry["time"], "username": "admin",
                     "success": entry["outcome"] == "ok",
                     "event_data": {"method": entry["action"] or entry["tool"], "authenticated": True}})
    return rows


def _graphs(state: GenericOps, a: dict[str, Any]) -> list[dict[str, Any]]:
    names = [("cpu", "CPU Usage"), ("memory", "Physical memory utilization"), ("interface", "Interface Traffic"),
             ("disk", "Disk I/O"), ("arcsize", "ARC Size"), ("cputemp", "CPU Temperature")]
    return [{"name": n, "title": t, "vertical_label": "%", "identifiers": None} for n, t in names]


def _graph_data(state: GenericOps, a: dict[str, Any]) -> list[dict[str, Any]]:
    end = int(state.now())
    out = []
    for g in a.get("graphs", []):
        points = [[end - 60 * i, round(20 + (i * 7) % 13 + 0.5, 1)] for i in range(10, 0, -1)]
        out.append({"name": g["name"], "identifier": g.get("identifier"), "data": points, "legend": ["time", "value"],
                    "start": end - 600, "end": end, "aggregations": {"min": [20.5], "max": [32.5], "mean": [26.1]}})
    return out


def _ssh_keypair(state: GenericOps, a: dict[str, Any]) -> dict[str, str]:
    tag = seed.fake_id("ssh", state.now(), length=40)
    return {"private_key": f"-----BEGIN OPENSSH PRIVATE KEY-----\nSIMULATED{tag}\n-----END OPENSSH PRIVATE KEY-----",
            "public_key": f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5SIMULATED{tag} root@{seed.HOSTNAME}"}


FIXTURES: dict[str, Callable[[GenericOps, dict[str, Any]], Any]] = {
    "iscsi_sessions": lambda s, a: [],
    "network_summary": lambda s, a: {"ips": {"enp1s0": {"IPV4": ["192.168.1.20/24"]}},
                                     "default_routes": ["192.168.1.1"], "nameservers": ["192.168.1.1", "9.9.9.9"]},
    "network_ipmi_info": lambda s, a: {"is_loaded": False, "chassis": {}},
    "network_commit_changes": lambda s, a: None,
    "network_rollback_changes": lambda s, a: None,
    "network_checkin": lambda s, a: None,
    "alert_categories": lambda s, a: [
        {"id": "HARDWARE", "title": "Hardware", "classes": [{"id": "SMART", "title": "S.M.A.R.T. Error"}]},
        {"id": "STORAGE", "title": "Storage", "classes": [{"id": "ZpoolCapacityWarning", "title": "Pool Space Usage"}]},
        {"id": "APPLICATIONS", "title": "Applications", "classes": [{"id": "AppUpdate", "title": "App Update"}]}],
    "alert_policies": lambda s, a: ["IMMEDIATELY", "HOURLY", "DAILY", "NEVER"],
    "alertservice_test": lambda s, a: (s.lookup(s.collections["alertservice"], a["id"], "alert service"), True)[1],
    "certificate_acme_servers": lambda s, a: {
        "https://acme-staging-v02.api.letsencrypt.org/directory": "Let's Encrypt Staging Directory",
        "https://acme-v02.api.letsencrypt.org/directory": "Let's Encrypt Production Directory"},
    "update_check": lambda s, a: {"status": "AVAILABLE", "version": "25.10.1",
                                  "changes": [{"operation": "upgrade", "old": seed.VERSION, "new": "TrueNAS-25.10.1"}],
                                  "notice": None, "notes": None},
    "boot_state": lambda s, a: {"name": "boot-pool", "status": "ONLINE", "healthy": True, "size": 32 * seed.GiB,
                                "allocated": 9 * seed.GiB, "free": 23 * seed.GiB, "topology": {"data": [
                                    {"type": "DISK", "disk": "nvme0n1", "status": "ONLINE"}]}},
    "docker_status": lambda s, a: {"status": "RUNNING" if s.configs["docker"].get("pool") else "UNCONFIGURED",
                                   "description": ""},
    "directory_services_status": lambda s, a: {"type": None, "status": None, "status_msg": None},
    "reporting_graphs": _graphs,
    "reporting_get_data": _graph_data,
    "audit_query": _audit,
    "keychaincredential_generate_ssh_key": _ssh_keypair,
    "keychaincredential_remote_ssh_scan": lambda s, a: (
        f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5SIMULATED{seed.fake_id('hostkey', a['host'], length=32)}"),
}
