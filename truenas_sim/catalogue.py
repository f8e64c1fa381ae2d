"""The action catalogue: the TSV of TrueNAS MCP actions, their schemas and our descriptions.

The TSV (``tools.tsv`` in this package) lists the 278 actions of the public TrueNAS MCP server
plus its umbrella tool ``truenas``. It is read once, from the package itself, never from outside.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

UMBRELLA = "truenas"
RAW_API = "truenas_api_call"


@dataclass(frozen=True)
class ToolSpec:
    """One action as the catalogue describes it."""

    name: str
    group: str
    params: dict[str, Any]
    method: str
    category: str
    routes: tuple[tuple[str, str], ...]
    confirm: bool
    job: bool
    risk: str = ""
    kind: str = ""
    schema: dict[str, Any] = field(default_factory=dict)

    @property
    def properties(self) -> dict[str, Any]:
        return self.params.get("properties", {})

    @property
    def required(self) -> list[str]:
        return list(self.params.get("required", []))


@dataclass(frozen=True)
class Catalogue:
    tools: dict[str, ToolSpec]
    umbrella: ToolSpec

    @property
    def categories(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for spec in self.tools.values():
            out.setdefault(spec.category, []).append(spec.name)
        return out


def _parse_routes(text: str) -> tuple[tuple[str, str], ...]:
    routes = []
    for part in text.split(";"):
        bits = part.strip().split(" ", 1)
        if len(bits) == 2 and bits[0] in {"GET", "POST", "PUT", "DELETE"}:
            routes.append((bits[0], bits[1].strip()))
    return tuple(routes)


def _spec_from_row(row: dict[str, str]) -> ToolSpec:
    params = json.loads(row["params"])
    return ToolSpec(
        name=row["name"],
        group=row["group"],
        params=params,
        method=row["middleware_method"],
        category=row["server_category"],
        routes=_parse_routes(row["rest_route"]),
        confirm=row["confirm_required"] == "yes",
        job=re.search(r"\bjob\b", row["middleware_note"]) is not None,
        risk=row["risk_guess"],
        kind=row["category_guess"],
        schema={"type": "object", **params},
    )


def read_rows() -> list[dict[str, str]]:
    """The raw TSV rows, in file order."""
    text = resources.files(__package__).joinpath("tools.tsv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


@functools.lru_cache(maxsize=1)
def load_catalogue() -> Catalogue:
    tools: dict[str, ToolSpec] = {}
    umbrella: ToolSpec | None = None
    for row in read_rows():
        spec = _spec_from_row(row)
        if spec.name == UMBRELLA:
            umbrella = spec
        else:
            tools[spec.name] = spec
    if umbrella is None:
        raise RuntimeError("tools.tsv has no umbrella row")
    return Catalogue(tools=tools, umbrella=umbrella)


# ---------------------------------------------------------------------------------------------
# Descriptions (our own wording). Tools with real simulated behaviour get a hand-written text;
# the rest are generated from the action's group, verb and middleware method.
# ---------------------------------------------------------------------------------------------

HAND_WRITTEN: dict[str, str] = {
    "system_info": "Show host facts: TrueNAS version, hostname, CPU, memory, uptime and time zone.",
    "system_version": "Show the TrueNAS release string running on this host.",
    "system_reboot": "Reboot the NAS after an optional delay in seconds. Every share, app and VM goes offline "
    "while it restarts.",
    "system_shutdown": "Power the NAS off after an optional delay in seconds. It stays down until someone "
    "powers it on again.",
    "service_list": "List system services (SMB, NFS, SSH, FTP, iSCSI...) with their run state and whether "
    "they start at boot.",
    "service_get": "Get one system service by numeric id, with its run state and boot flag.",
    "service_update": "Choose whether a service starts at boot (enable). Does not start or stop it now.",
    "service_start": "Start a system service by its short name (for example cifs, nfs, ssh).",
    "service_stop": "Stop a running system service by its short name; clients using it are cut off.",
    "service_restart": "Restart a system service by its short name.",
    "pool_list": "List ZFS storage pools with health, capacity (size, allocated, free), topology and last scrub.",
    "pool_get": "Get one storage pool by numeric id.",
    "pool_status": "Show the health, vdev topology and scrub state of one storage pool.",
    "pool_create": "Create a new ZFS pool from unused disks. Consumes the named disks and erases what is on them.",
    "pool_update": "Change pool settings such as autotrim, or extend the pool with more vdevs.",
    "pool_scrub": "Start, stop or pause a scrub (a full integrity check) of a pool.",
    "pool_export": "Export (disconnect) a pool. Its datasets and shares disappear from this host; with destroy "
    "true the data is wiped for good.",
    "pool_attachments": "List the services (shares, tasks, apps, VMs) that use a pool.",
    "pool_get_disks": "List the disk devices that make up a pool.",
    "pool_replace_disk": "Replace a member disk of a pool with another disk and resilver onto it.",
    "dataset_list": "List ZFS datasets and zvols (optionally of one pool) with usage, quota and properties.",
    "dataset_get": "Get one dataset or zvol by its full name, for example tank/media.",
    "dataset_create": "Create a dataset (FILESYSTEM) or a zvol (VOLUME, needs volsize) under an existing parent. "
    "Quotas are 0 or at least 1 GiB.",
    "dataset_update": "Change properties of a dataset: quota, compression, atime, record size, sync and so on.",
    "dataset_delete": "Delete a dataset or zvol and all data in it. Refuses a dataset that has child datasets "
    "or snapshots unless recursive is true.",
    "dataset_promote": "Promote a cloned dataset so it no longer depends on its origin snapshot.",
    "dataset_lock": "Lock an encrypted dataset, unloading its key so its data is unreadable until unlocked.",
    "dataset_unlock": "Unlock an encrypted dataset with its key or passphrase.",
    "dataset_encryption_summary": "Summarise the encryption state of a dataset and the datasets below it.",
    "snapshot_list": "List ZFS snapshots, optionally of one dataset, oldest first.",
    "snapshot_get": "Get one snapshot by id (dataset@name).",
    "snapshot_create": "Take a snapshot of a dataset now; recursive also snapshots every child dataset.",
    "snapshot_delete": "Destroy a snapshot. Refuses one that a clone still depends on.",
    "snapshot_clone": "Create a new writable dataset from a snapshot.",
    "snapshot_rollback": "Roll a dataset back to a snapshot, discarding every change made since. Refuses when "
    "newer snapshots exist unless recursive is true, which destroys them.",
    "snapshot_task_list": "List periodic snapshot tasks with their dataset, schedule, naming schema and retention.",
    "snapshot_task_create": "Create a periodic snapshot task for a dataset.",
    "snapshot_task_delete": "Delete a periodic snapshot task (existing snapshots stay).",
    "snapshot_task_run": "Take the snapshot of a periodic snapshot task right now.",
    "smb_share_list": "List SMB (Windows) shares.",
    "smb_share_get": "Get one SMB share by numeric id.",
    "smb_share_create": "Share a directory under /mnt over SMB. The share name must be unique.",
    "smb_share_update": "Change an SMB share: name, path, read-only flag, allowed hosts and more.",
    "smb_share_delete": "Remove an SMB share. The files stay; clients lose access.",
    "nfs_share_list": "List NFS shares.",
    "nfs_share_get": "Get one NFS share by numeric id.",
    "nfs_share_create": "Share a directory under /mnt over NFS with the given networks or hosts.",
    "nfs_share_update": "Change an NFS share: path, networks, hosts, read-only flag, user mapping.",
    "nfs_share_delete": "Remove an NFS share. The files stay; clients lose access.",
    "user_list": "List local user accounts.",
    "user_get": "Get one local user by numeric id.",
    "user_create": "Create a local user, optionally with its own primary group and home directory.",
    "user_update": "Change a local user: name, group, shell, e-mail, SSH key, lock state, sudo rights.",
    "user_delete": "Delete a local user. Built-in accounts cannot be deleted.",
    "user_set_password": "Set a new password for a local user.",
    "group_list": "List local groups.",
    "group_get": "Get one local group by numeric id.",
    "group_create": "Create a local group.",
    "group_update": "Change a local group: name, members, sudo rights.",
    "group_delete": "Delete a local group. Built-in groups cannot be deleted.",
    "disk_list": "List physical disks with model, serial, size and the pool each belongs to.",
    "disk_get": "Get one disk by identifier or device name.",
    "disk_update": "Change per-disk settings: description, standby, power management, SMART.",
    "disk_wipe": "Erase a disk (QUICK or FULL). Refuses a disk that is part of a pool.",
    "vm_list": "List virtual machines with their resources and run state.",
    "vm_get": "Get one virtual machine by numeric id.",
    "vm_create": "Define a new virtual machine (name and memory in MiB at least).",
    "vm_update": "Change a virtual machine's definition.",
    "vm_delete": "Delete a virtual machine; zvols true also destroys its disks.",
    "vm_start": "Power on a virtual machine.",
    "vm_stop": "Stop a running virtual machine; force true stops it at once instead of asking the guest.",
    "vm_restart": "Restart a virtual machine.",
    "vm_status": "Show whether a virtual machine is running.",
    "vm_clone": "Copy a virtual machine under a new name.",
    "app_list": "List installed apps with state (RUNNING, STOPPED, DEPLOYING), version and upgrade availability.",
    "app_get": "Get one installed app by name.",
    "app_create": "Add an app from the catalog and deploy it.",
    "app_update": "Change an app's configuration values; the app is redeployed with them.",
    "app_delete": "Uninstall an app.",
    "app_start": "Start a stopped app.",
    "app_stop": "Stop a running app.",
    "app_redeploy": "Redeploy an app's containers.",
    "app_upgrade": "Upgrade an app to its latest (or a given) version.",
    "app_rollback": "Roll an app back to an earlier version.",
    "alert_list": "List current alerts with level, text and whether they were dismissed.",
    "alert_dismiss": "Dismiss an alert by uuid (it stays listed, marked dismissed).",
    "alert_restore": "Restore a dismissed alert by uuid.",
    "cloudsync_credentials_list": "List saved cloud credentials, including their provider attributes.",
    "cloudsync_credentials_create": "Save credentials for a cloud provider (S3, B2, ...).",
    "cloudsync_credentials_update": "Change saved cloud credentials.",
    "cloudsync_credentials_delete": "Delete saved cloud credentials. Refuses credentials a task still uses.",
    "cloudsync_credentials_verify": "Check that credentials for a provider would be accepted.",
    "cloudsync_list": "List cloud sync tasks with direction, transfer mode, schedule and last job.",
    "cloudsync_get": "Get one cloud sync task by numeric id.",
    "cloudsync_create": "Create a cloud sync task between a local path and a cloud bucket.",
    "cloudsync_update": "Change a cloud sync task.",
    "cloudsync_delete": "Delete a cloud sync task (remote data stays).",
    "cloudsync_run": "Run a cloud sync task now. Returns a job id at once.",
    "cloudsync_abort": "Abort the running job of a cloud sync task.",
    "cloud_backup_list": "List cloud backup (restic) tasks with path, schedule, retention and last job.",
    "cloud_backup_create": "Create a cloud backup task that stores restic snapshots of a local path.",
    "cloud_backup_update": "Change a cloud backup task, for example its retention (keep_last).",
    "cloud_backup_delete": "Delete a cloud backup task (remote snapshots stay).",
    "cloud_backup_run": "Run a cloud backup now. Returns a job id at once; a second run while one runs is "
    "queued, and further runs join the queued one.",
    "cloud_backup_abort": "Abort the running job of a cloud backup task.",
    "cloud_backup_snapshots": "List the restic snapshots a cloud backup task has stored.",
    "filesystem_listdir": "List the entries of a directory under /mnt.",
    "filesystem_stat": "Show type, owner and mode of a path under /mnt.",
    "filesystem_mkdir": "Create a directory under /mnt.",
    "truenas_api_call": "Send a raw request to the TrueNAS REST API v2.0 (method, path, optional JSON body). "
    "Bypasses the per-action checks of the other tools. GET /core/get_jobs lists background jobs.",
}

OTHER_ACTIONS: dict[str, str] = {
    "system_ntp_servers": "List the NTP servers the host syncs its clock with.",
    "system_config_download": "Download a copy of the configuration database, optionally including the secret "
    "seed and pool keys.",
    "system_config_upload": "Restore a configuration database and reboot into it.",
    "mail_send": "Send an e-mail through the configured mail server.",
    "dataset_set_permissions": "Set the owner, mode or ACL on a dataset's mountpoint.",
    "dataset_get_quota": "List user, group or project quotas set on a dataset.",
    "dataset_set_quota": "Set or clear user, group or project quotas on a dataset (0 clears one).",
    "nfs_client_count": "Count the NFS clients connected right now.",
    "iscsi_sessions": "List the iSCSI initiators connected right now.",
    "network_summary": "Summarise IP addresses, default routes and name servers in use.",
    "network_ipmi_info": "Show whether IPMI is available and the chassis status.",
    "network_commit_changes": "Apply pending network interface changes; unless they are checked in in time, the "
    "previous settings come back.",
    "network_rollback_changes": "Throw away pending network interface changes.",
    "network_checkin": "Keep network changes that were committed, stopping the automatic rollback.",
    "user_shell_choices": "List the login shells a user can be given.",
    "disk_smart_test_run": "Start a SMART self-test (SHORT, LONG, ...) on the given disks.",
    "disk_temperatures": "Show the current temperature of the named disks.",
    "vm_available_memory": "Show how much memory is left for virtual machines, in bytes.",
    "vm_display_uri": "Get the web address of a virtual machine's display.",
    "app_available": "List the apps the catalog offers.",
    "app_categories": "List the catalog's app categories.",
    "app_outdated_images": "List container images of an app that have newer versions.",
    "app_pull_images": "Pull fresh container images for an app.",
    "docker_status": "Show whether the Docker service that runs apps is up.",
    "alert_categories": "List alert categories and the alert classes in each.",
    "alert_policies": "List how often alerts of a class can be sent.",
    "alertservice_test": "Send a test alert through an alert service.",
    "certificate_acme_servers": "List the ACME directories certificates can be requested from.",
    "update_check": "Check whether a newer TrueNAS release is available.",
    "update_config_set": "Choose the update train to follow.",
    "update_download": "Download the pending update without applying it.",
    "update_apply": "Apply the downloaded update, optionally rebooting into it.",
    "bootenv_activate": "Make a boot environment the one used at next boot.",
    "bootenv_keep": "Protect (or stop protecting) a boot environment from automatic removal.",
    "boot_state": "Show the health and layout of the boot pool.",
    "boot_attach_disk": "Add a disk to the boot pool as a mirror.",
    "boot_detach_disk": "Remove a disk from the boot pool.",
    "boot_scrub": "Check the boot pool's integrity.",
    "replication_restore": "Create a task that replicates a dataset back from its replication target.",
    "cloudsync_restore": "Create a task that copies data back from the cloud to a local path.",
    "cloudsync_providers": "List the cloud providers cloud sync and cloud backup can use.",
    "cloudsync_list_buckets": "List the buckets the given cloud credentials can see.",
    "cloudsync_list_directory": "List a folder in a cloud bucket.",
    "keychaincredential_generate_ssh_key": "Generate a new SSH key pair (not saved until you create a credential).",
    "keychaincredential_remote_ssh_scan": "Fetch the SSH host key of a remote machine.",
    "filesystem_set_permissions": "Set owner and Unix mode on a path under /mnt, optionally recursively.",
    "filesystem_get_acl": "Show the access control list of a path under /mnt.",
    "filesystem_set_acl": "Set a new access control list on a path under /mnt.",
    "filesystem_chown": "Change the owner and group of a path under /mnt, optionally recursively.",
    "reporting_graphs": "List the performance graphs that can be queried.",
    "reporting_get_data": "Fetch data points of performance graphs for a time range.",
    "directory_services_status": "Show whether the host is joined to Active Directory or LDAP, and its health.",
    "directory_services_leave": "Leave the Active Directory domain, removing the computer account.",
    "directory_services_cache_refresh": "Reload the cache of directory users and groups.",
    "audit_query": "Search the audit log of API calls, logins and share access.",
}

NOUNS: dict[str, str] = {
    "system_ntp_server": "NTP server",
    "system_general": "general system",
    "system_advanced": "advanced system",
    "disk_smart_test": "SMART test result",
    "api_key": "API key",
    "iscsi_global": "iSCSI global",
    "iscsi_target": "iSCSI target",
    "iscsi_extent": "iSCSI extent",
    "iscsi_portal": "iSCSI portal",
    "iscsi_initiator": "iSCSI initiator group",
    "iscsi_targetextent": "iSCSI target-extent mapping",
    "network_interface": "network interface",
    "network_static_route": "static route",
    "network": "network",
    "vm_device": "virtual machine device",
    "alertservice": "alert service",
    "certificate": "certificate",
    "acme_dns_authenticator": "ACME DNS authenticator",
    "bootenv": "boot environment",
    "replication": "replication task",
    "cronjob": "cron job",
    "rsync_task": "rsync task",
    "initshutdown": "init/shutdown script",
    "keychaincredential": "keychain credential",
    "kerberos_realm": "Kerberos realm",
    "kerberos_keytab": "Kerberos keytab",
    "kerberos": "Kerberos",
    "tunable": "kernel tunable",
    "privilege": "privilege",
    "directory_services": "directory services",
    "docker": "Docker",
    "reporting": "reporting",
    "audit": "audit",
    "update": "update",
    "mail": "mail",
    "smb": "SMB service",
    "nfs": "NFS service",
    "ssh": "SSH service",
    "ftp": "FTP service",
    "snmp": "SNMP service",
    "ups": "UPS service",
}

VERB_TEMPLATES: dict[str, str] = {
    "list": "List every {noun}.",
    "get": "Get one {noun} by id.",
    "create": "Create {a} {noun}.",
    "update": "Change the settings of {a} {noun}.",
    "delete": "Delete {a} {noun}.",
    "run": "Run {a} {noun} now.",
    "config": "Show the {noun} configuration.",
    "config_update": "Change the {noun} configuration.",
}

CATEGORY_BLURBS: dict[str, str] = {
    "system": "host information, power, general settings, services, mail, API keys",
    "storage": "pools, datasets, zvols, snapshots and periodic snapshot tasks",
    "sharing": "SMB and NFS shares, iSCSI targets and extents",
    "network": "interfaces, routes, DNS and gateway settings",
    "account": "local users, groups and privileges",
    "disk": "physical disks, SMART tests, wiping",
    "vm": "virtual machines and their devices",
    "app": "installed apps and the Docker service",
    "alert": "alerts and alert services",
    "certificate": "certificates and ACME authenticators",
    "update": "system updates, boot environments and the boot pool",
    "data_protection": "replication, cloud sync, cloud backup, cron, rsync, keychain",
    "filesystem": "files, directories, permissions and ACLs under /mnt",
    "reporting": "metrics and graphs",
    "directory": "Active Directory, LDAP and Kerberos",
    "service_config": "settings of SSH, FTP, SNMP, UPS and kernel tunables",
    "audit": "the audit log and its settings",
    "api": "raw access to the REST API",
}


CONFIG_UPDATES = {"system_general_update", "mail_update", "directory_services_update"}
VOWEL_SOUND = re.compile(r"^([aeiou]|[AEFHILMNORSX][A-Z]|rsync)")


def split_action(name: str) -> tuple[str, str]:
    """Split an action name into (object, verb), e.g. iscsi_target_create -> (iscsi_target, create)."""
    if name in CONFIG_UPDATES:
        return name[: -len("_update")], "config_update"
    if name.endswith("_config_update"):
        return name[: -len("_config_update")], "config_update"
    for verb in ("list", "get", "create", "update", "delete", "run", "config"):
        if name.endswith("_" + verb):
            return name[: -len(verb) - 1], verb
    return name, ""


def _generated(spec: ToolSpec) -> str:
    if spec.name in OTHER_ACTIONS:
        return OTHER_ACTIONS[spec.name]
    base, verb = split_action(spec.name)
    noun = NOUNS.get(base, base.replace("_", " "))
    article = "an" if VOWEL_SOUND.match(noun) else "a"
    template = VERB_TEMPLATES.get(verb, "Run {name}.")
    return template.format(noun=noun, a=article, name=spec.name.replace("_", " "))


def describe(spec: ToolSpec) -> str:
    """The description a client sees for one action."""
    text = HAND_WRITTEN.get(spec.name) or _generated(spec)
    if spec.method not in ("*", "(dispatch)"):
        text = f"{text} (TrueNAS method {spec.method})"
    if spec.job and "job id" not in text:
        text += " Answers at once with a job id; the work goes on in the background."
    if spec.confirm:
        text += " Needs confirm: true; without it nothing is changed."
    return text


def umbrella_description(catalogue: Catalogue) -> str:
    cats = ", ".join(sorted(catalogue.categories))
    return (
        "Run any TrueNAS action. Call with no arguments (or category 'help') to list categories, with a "
        "category alone to list its actions and their parameters, and with category, action and params to "
        f"run one. Categories: {cats}."
    )
