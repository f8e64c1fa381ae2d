"""System, service, account, sharing and alert operations."""

from __future__ import annotations

import copy
import posixpath
import re
from typing import Any

from . import seed
from .base import StateBase, public
from .errors import ApiError, invalid
from .jobs import Job, date

USERNAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
USER_FIELDS = ("username", "full_name", "email", "uid", "smb", "home", "shell", "sudo_commands",
               "sudo_commands_nopasswd", "locked", "ssh_password_enabled", "sshpubkey")
GROUP_FIELDS = ("gid", "name", "smb", "sudo_commands", "sudo_commands_nopasswd")
SMB_FIELDS = ("path", "name", "comment", "enabled", "home", "purpose", "ro", "browsable", "guestok", "hostsallow",
              "hostsdeny", "recyclebin", "abe", "acl", "durablehandle", "streams", "timemachine", "shadowcopy",
              "auxsmbconf")
SMB_DEFAULTS: dict[str, Any] = {
    "purpose": "DEFAULT_SHARE", "comment": "", "enabled": True, "home": False, "ro": False, "browsable": True,
    "guestok": False, "hostsallow": [], "hostsdeny": [], "recyclebin": False, "abe": False, "acl": True,
    "durablehandle": True, "streams": True, "timemachine": False, "shadowcopy": False, "auxsmbconf": "",
    "locked": False,
}
USER_DEFAULTS: dict[str, Any] = {
    "username": "", "unixhash": "*", "smbhash": "*", "home": "/var/empty", "shell": "/usr/bin/bash",
    "full_name": "", "builtin": False, "smb": True, "groups": [], "password_disabled": True,
    "ssh_password_enabled": False, "sshpubkey": None, "locked": False, "sudo_commands": [],
    "sudo_commands_nopasswd": [], "email": None, "immutable": False, "local": True, "api_keys": [], "roles": [],
}
NFS_FIELDS = ("comment", "enabled", "ro", "maproot_user", "maproot_group", "mapall_user", "mapall_group",
              "networks", "hosts", "security")


class SystemOps(StateBase):
    # -- system -------------------------------------------------------------------------------

    def op_system_info(self, a: dict[str, Any]) -> dict[str, Any]:
        info = dict(self.system)
        now = self.now()
        info.update(uptime_seconds=round(now - self.boottime, 1), datetime=date(now), boottime=date(self.boottime))
        return info

    def op_system_version(self, a: dict[str, Any]) -> str:
        return seed.VERSION

    def _power_job(self, method: str, a: dict[str, Any], text: str) -> int:
        def done(job: Job) -> None:
            self.boottime = self.now()
            self.raise_alert("SystemPower", "INFO", text, key=f"power-{job.id}")

        return self.jobs.submit(method, [{"delay": a.get("delay", 0)}], on_success=done).id

    def op_system_reboot(self, a: dict[str, Any]) -> int:
        return self._power_job("system.reboot", a, "The system was rebooted (simulated).")

    def op_system_shutdown(self, a: dict[str, Any]) -> int:
        return self._power_job("system.shutdown", a, "The system was shut down and powered on again (simulated).")

    # -- services -----------------------------------------------------------------------------

    def _service(self, name: str) -> dict[str, Any]:
        svc = next((s for s in self.services.values() if s["service"] == name), None)
        if svc is None:
            raise ApiError(404, f"[ENOENT] service {name!r} does not exist")
        return svc

    def op_service_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [public(s) for s in self.services.values()]

    def op_service_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return public(self.lookup(self.services, a["id"], "service"))

    def op_service_update(self, a: dict[str, Any]) -> int:
        svc = self.lookup(self.services, a["id"], "service")
        svc["enable"] = a["enable"]
        return svc["id"]

    def _set_running(self, name: str, running: bool) -> bool:
        svc = self._service(name)
        svc["state"] = "RUNNING" if running else "STOPPED"
        svc["pids"] = [1200 + svc["id"] * 7 + self.total_calls] if running else []
        return True

    def op_service_start(self, a: dict[str, Any]) -> bool:
        return self._set_running(a["service"], True)

    def op_service_stop(self, a: dict[str, Any]) -> bool:
        return self._set_running(a["service"], False)

    def op_service_restart(self, a: dict[str, Any]) -> bool:
        return self._set_running(a["service"], True)

    # -- users and groups ---------------------------------------------------------------------

    def user_view(self, user: dict[str, Any]) -> dict[str, Any]:
        view = public(user)
        group = self.groups.get(user["group"]["id"])
        view["group"] = {"id": user["group"]["id"], "bsdgrp_gid": group["gid"] if group else None,
                         "bsdgrp_group": group["name"] if group else None}
        return view

    def _user(self, user_id: Any) -> dict[str, Any]:
        return self.lookup(self.users, user_id, "user")

    def op_user_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.user_view(u) for u in self.users.values()]

    def op_user_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return self.user_view(self._user(a["id"]))

    def _check_username(self, where: str, name: str, skip: int | None = None) -> None:
        self.require(bool(USERNAME_RE.match(name)), where, f"invalid username {name!r}")
        taken = any(u["username"] == name and u["id"] != skip for u in self.users.values())
        self.require(not taken, where, f"username {name!r} is already in use")

    def op_user_create(self, a: dict[str, Any]) -> dict[str, Any]:
        self._check_username("user_create.username", a["username"])
        if a.get("group") is not None:
            self.require(a["group"] in self.groups, "user_create.group", f"group {a['group']} does not exist")
            group_id = a["group"]
        else:
            self.require(bool(a.get("group_create")), "user_create.group", "give a group or set group_create")
            group_id = self._add_group({"name": a["username"]}, "user_create")["id"]
        used_uids = {u["uid"] for u in self.users.values()}
        uid = a.get("uid") or next(n for n in range(3000, 60000) if n not in used_uids)
        self.require(uid not in used_uids, "user_create.uid", f"uid {uid} is already in use")
        user_id = self.next_id("user", self.users)
        user = {"id": user_id, "uid": uid, "group": {"id": group_id}, **copy.deepcopy(USER_DEFAULTS)}
        user.update({k: a[k] for k in USER_FIELDS if k in a})
        self._set_password(user, a.get("password"))
        self.users[user_id] = user
        if a.get("home_create") and user["home"].startswith("/mnt/"):
            self.directories.add(posixpath.join(user["home"], user["username"]))
        return self.user_view(user)

    @staticmethod
    def _set_password(user: dict[str, Any], password: str | None) -> None:
        user["password_disabled"] = not password
        user["unixhash"] = f"$6$SIMULATED${seed.fake_id('pw', password, length=20)}" if password else "*"

    def op_user_update(self, a: dict[str, Any]) -> dict[str, Any]:
        user = self._user(a["id"])
        if user["builtin"]:
            locked_keys = [k for k in ("username", "uid", "group", "home") if k in a]
            self.require(not locked_keys, "user_update", f"{locked_keys} of built-in user cannot be changed")
        if "username" in a:
            self._check_username("user_update.username", a["username"], skip=user["id"])
        if "group" in a:
            self.require(a["group"] in self.groups, "user_update.group", f"group {a['group']} does not exist")
            user["group"] = {"id": a["group"]}
        user.update({k: a[k] for k in USER_FIELDS if k in a})
        if "password" in a:
            self._set_password(user, a["password"])
        return self.user_view(user)

    def op_user_delete(self, a: dict[str, Any]) -> int:
        user = self._user(a["id"])
        self.require(not user["builtin"], "user_delete", f"built-in user {user['username']!r} cannot be deleted")
        del self.users[user["id"]]
        group = self.groups.get(user["group"]["id"])
        others = [u for u in self.users.values() if u["group"]["id"] == user["group"]["id"]]
        if a.get("delete_group") and group and not group["builtin"] and not others:
            del self.groups[group["id"]]
        return user["id"]

    def op_user_set_password(self, a: dict[str, Any]) -> None:
        user = self._user(a["id"])
        self.require(len(a["password"]) >= 1, "user_set_password.password", "the password must not be empty")
        self._set_password(user, a["password"])
        return None

    def op_user_shell_choices(self, a: dict[str, Any]) -> dict[str, str]:
        return {"/usr/bin/bash": "bash", "/usr/bin/zsh": "zsh", "/usr/bin/sh": "sh",
                "/usr/bin/tmux": "tmux", "/usr/sbin/nologin": "nologin"}

    def group_view(self, group: dict[str, Any]) -> dict[str, Any]:
        view = public(group)
        view["users"] = sorted({*group.get("users", []),
                                *(u["id"] for u in self.users.values() if u["group"]["id"] == group["id"]),
                                *(u["id"] for u in self.users.values() if group["id"] in u["groups"])})
        return view

    def _group(self, group_id: Any) -> dict[str, Any]:
        return self.lookup(self.groups, group_id, "group")

    def op_group_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.group_view(g) for g in self.groups.values()]

    def op_group_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return self.group_view(self._group(a["id"]))

    def _add_group(self, a: dict[str, Any], where: str) -> dict[str, Any]:
        name = a["name"]
        self.require(bool(USERNAME_RE.match(name)), f"{where}.name", f"invalid group name {name!r}")
        self.require(all(g["name"] != name for g in self.groups.values()), f"{where}.name",
                     f"group {name!r} already exists")
        used = {g["gid"] for g in self.groups.values()}
        gid = a.get("gid") or next(n for n in range(3000, 60000) if n not in used)
        self.require(gid not in used, f"{where}.gid", f"gid {gid} is already in use")
        group_id = self.next_id("group", self.groups)
        group = {"id": group_id, "gid": gid, "group": name, "name": name, "builtin": False, "smb": a.get("smb", True),
                 "sudo_commands": a.get("sudo_commands", []),
                 "sudo_commands_nopasswd": a.get("sudo_commands_nopasswd", []),
                 "users": list(a.get("users", [])), "local": True, "immutable": False, "roles": []}
        self.groups[group_id] = group
        return group

    def op_group_create(self, a: dict[str, Any]) -> dict[str, Any]:
        for user_id in a.get("users", []):
            self._user(user_id)
        return self.group_view(self._add_group(a, "group_create"))

    def op_group_update(self, a: dict[str, Any]) -> dict[str, Any]:
        group = self._group(a["id"])
        self.require(not group["builtin"] or "name" not in a, "group_update", "a built-in group cannot be renamed")
        for user_id in a.get("users", []):
            self._user(user_id)
        group.update({k: a[k] for k in GROUP_FIELDS if k in a})
        group["group"] = group["name"]
        if "users" in a:
            group["users"] = list(a["users"])
        return self.group_view(group)

    def op_group_delete(self, a: dict[str, Any]) -> int:
        group = self._group(a["id"])
        self.require(not group["builtin"], "group_delete", f"built-in group {group['name']!r} cannot be deleted")
        primary = [u for u in self.users.values() if u["group"]["id"] == group["id"]]
        if primary and not a.get("delete_users"):
            raise invalid("group_delete", f"group {group['name']!r} is the primary group of "
                          f"{[u['username'] for u in primary]}; pass delete_users true")
        for user in primary:
            self.require(not user["builtin"], "group_delete", f"it is the group of built-in user {user['username']}")
            del self.users[user["id"]]
        del self.groups[group["id"]]
        return group["id"]

    # -- SMB and NFS shares -------------------------------------------------------------------

    def op_smb_share_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [public(s) for s in self.smb_shares.values()]

    def op_smb_share_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return public(self.lookup(self.smb_shares, a["id"], "SMB share"))

    def _check_smb_name(self, where: str, name: str, skip: int | None = None) -> None:
        self.require(bool(name) and name.lower() not in ("global", "homes", "printers"), where,
                     f"{name!r} is not a valid share name")
        taken = any(s["name"].lower() == name.lower() and s["id"] != skip for s in self.smb_shares.values())
        self.require(not taken, where, f"a share named {name!r} already exists")

    def op_smb_share_create(self, a: dict[str, Any]) -> dict[str, Any]:
        self.check_share_path("smb_share_create.path", a["path"])
        name = a.get("name") or posixpath.basename(a["path"].rstrip("/"))
        self._check_smb_name("smb_share_create.name", name)
        share_id = self.next_id("smb", self.smb_shares)
        share = {"id": share_id, **copy.deepcopy(SMB_DEFAULTS)}
        share.update({k: a[k] for k in SMB_FIELDS if k in a})
        share["name"] = name
        self.smb_shares[share_id] = share
        return public(share)

    def op_smb_share_update(self, a: dict[str, Any]) -> dict[str, Any]:
        share = self.lookup(self.smb_shares, a["id"], "SMB share")
        if "path" in a:
            self.check_share_path("smb_share_update.path", a["path"])
        if "name" in a:
            self._check_smb_name("smb_share_update.name", a["name"], skip=share["id"])
        share.update({k: a[k] for k in SMB_FIELDS if k in a})
        return public(share)

    def op_smb_share_delete(self, a: dict[str, Any]) -> bool:
        self.lookup(self.smb_shares, a["id"], "SMB share")
        del self.smb_shares[a["id"]]
        return True

    def op_nfs_share_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [public(s) for s in self.nfs_shares.values()]

    def op_nfs_share_get(self, a: dict[str, Any]) -> dict[str, Any]:
        return public(self.lookup(self.nfs_shares, a["id"], "NFS share"))

    def _nfs_fields(self, where: str, a: dict[str, Any]) -> dict[str, Any]:
        fields = {k: a[k] for k in NFS_FIELDS if k in a}
        path = a.get("path") or (a.get("paths") or [None])[0]
        if path is not None:
            self.check_share_path(f"{where}.path", path)
            fields["path"] = path
        for net in a.get("networks", []):
            self.require("/" in net, f"{where}.networks", f"{net!r} is not a network in CIDR form")
        return fields

    def op_nfs_share_create(self, a: dict[str, Any]) -> dict[str, Any]:
        fields = self._nfs_fields("nfs_share_create", a)
        self.require("path" in fields, "nfs_share_create.path", "a path is required")
        share_id = self.next_id("nfs", self.nfs_shares)
        share = {"id": share_id, "aliases": [], "comment": "", "enabled": True, "ro": False, "maproot_user": None,
                 "maproot_group": None, "mapall_user": None, "mapall_group": None, "networks": [], "hosts": [],
                 "security": [], "locked": False, **fields}
        self.nfs_shares[share_id] = share
        return public(share)

    def op_nfs_share_update(self, a: dict[str, Any]) -> dict[str, Any]:
        share = self.lookup(self.nfs_shares, a["id"], "NFS share")
        share.update(self._nfs_fields("nfs_share_update", a))
        return public(share)

    def op_nfs_share_delete(self, a: dict[str, Any]) -> bool:
        self.lookup(self.nfs_shares, a["id"], "NFS share")
        del self.nfs_shares[a["id"]]
        return True

    def op_nfs_client_count(self, a: dict[str, Any]) -> int:
        nfs = self._service("nfs")
        return 2 if nfs["state"] == "RUNNING" and self.nfs_shares else 0

    # -- alerts -------------------------------------------------------------------------------

    def op_alert_list(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        self.tick()
        return [public(al) for al in sorted(self.alerts.values(), key=lambda al: al["datetime"]["$date"])]

    def _alert(self, uuid: str) -> dict[str, Any]:
        return self.lookup(self.alerts, uuid, "alert")

    def op_alert_dismiss(self, a: dict[str, Any]) -> None:
        self._alert(a["uuid"])["dismissed"] = True
        return None

    def op_alert_restore(self, a: dict[str, Any]) -> None:
        self._alert(a["uuid"])["dismissed"] = False
        return None
