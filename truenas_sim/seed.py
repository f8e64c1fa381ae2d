"""The deterministic demo seed: one small home NAS with a bit of everything.

Every value here is invented for the simulator. Secrets are obviously fake.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

KiB = 1024
MiB = KiB * 1024
GiB = MiB * 1024
TiB = GiB * 1024

SEED_TIME = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0
DAY = 24 * HOUR
HOSTNAME = "truenas-sim"
VERSION = "TrueNAS-25.10.0"

DISK_BYTES = 3_998_639_460_352
POOL_SIZE = 3 * DISK_BYTES
POOL_ALLOCATED = int(POOL_SIZE * 0.68)
DEFAULT_PROPS: dict[str, Any] = {
    "compression": "LZ4", "atime": "OFF", "dedup": "OFF", "recordsize": "128K", "readonly": "OFF",
    "sync": "STANDARD", "exec": "ON", "copies": 1, "aclmode": "DISCARD", "acltype": "POSIX",
    "casesensitivity": "SENSITIVE", "snapdir": "HIDDEN", "checksum": "ON",
}
SIZE_PROPS = ("quota", "refquota", "reservation", "refreservation")


def fake_id(*parts: object, length: int = 64) -> str:
    """A stable hex id derived from its parts."""
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:length]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def system_info() -> dict[str, Any]:
    return {
        "version": VERSION, "buildtime": {"$date": int((SEED_TIME - 30 * DAY) * 1000)},
        "hostname": HOSTNAME, "physmem": 32 * GiB, "model": "Intel(R) Xeon(R) E-2224 CPU @ 3.40GHz",
        "cores": 4, "physical_cores": 4, "loadavg": [0.31, 0.27, 0.22],
        "system_serial": "SIM-0001-2026", "system_product": "Simulated NAS", "system_manufacturer": "Portcullis",
        "license": None, "timezone": "UTC", "ecc_memory": True,
        "boottime": {"$date": int((SEED_TIME - 12 * DAY) * 1000)},
    }


def disks() -> list[dict[str, Any]]:
    out = []
    for index, name in enumerate(["sda", "sdb", "sdc", "sdd"]):
        serial = f"WD-WX2{index}D80SIM{index:02d}"
        out.append({
            "identifier": f"{{serial_lunid}}{serial}", "name": name, "devname": name, "serial": serial,
            "lunid": fake_id("lun", name, length=16), "size": DISK_BYTES, "type": "HDD",
            "model": "WDC WD40EFPX-68C6CN0", "rotationrate": 5400, "description": "",
            "number": 2048 + index * 16, "subsystem": "scsi", "transfermode": "Auto",
            "hddstandby": "ALWAYS ON", "advpowermgmt": "DISABLED", "togglesmart": True,
            "smartoptions": "", "critical": None, "difference": None, "informational": None,
            "expiretime": None, "enclosure": None, "passwd": "", "bus": "ATA",
            "pool": "tank" if index < 3 else None, "zfs_guid": fake_id("guid", name, length=19),
        })
    return out


def pool_tank(disk_list: list[dict[str, Any]]) -> dict[str, Any]:
    members = [d for d in disk_list if d["pool"] == "tank"]
    children = [{
        "name": fake_id("part", d["name"], length=36), "type": "DISK", "path": f"/dev/{d['name']}1",
        "guid": d["zfs_guid"], "status": "ONLINE", "disk": d["name"], "unavail_disk": None,
        "stats": {"read_errors": 0, "write_errors": 0, "checksum_errors": 0}, "children": [],
    } for d in members]
    return {
        "id": 1, "name": "tank", "guid": "7203843956189221337", "path": "/mnt/tank", "status": "ONLINE",
        "healthy": True, "warning": False, "status_code": "HEALTHY", "status_detail": None,
        "size": POOL_SIZE, "allocated": POOL_ALLOCATED, "free": POOL_SIZE - POOL_ALLOCATED,
        "freeing": 0, "fragmentation": "9", "is_upgraded": True, "autotrim": {"value": "off"},
        "scan": {
            "function": "SCRUB", "state": "FINISHED", "start_time": {"$date": int((SEED_TIME - 5 * DAY) * 1000)},
            "end_time": {"$date": int((SEED_TIME - 5 * DAY + 6 * HOUR) * 1000)}, "percentage": 100.0,
            "bytes_to_process": POOL_ALLOCATED, "bytes_processed": POOL_ALLOCATED, "errors": 0, "pause": None,
        },
        "topology": {
            "data": [{"name": "raidz1-0", "type": "RAIDZ1", "path": None, "guid": "1157730195334411",
                      "status": "ONLINE", "children": children,
                      "stats": {"read_errors": 0, "write_errors": 0, "checksum_errors": 0}}],
            "log": [], "cache": [], "spare": [], "special": [], "dedup": [],
        },
    }


def datasets() -> list[dict[str, Any]]:
    """Internal dataset records: only locally set properties live in ``props``."""
    def ds(name: str, used: int, txg: int, **extra: Any) -> dict[str, Any]:
        record = {"name": name, "pool": "tank", "type": "FILESYSTEM", "used": used, "volsize": None,
                  "encrypted": False, "locked": False, "origin": None, "txg": txg, "props": {},
                  "comments": ""}
        record.update(extra)
        return record

    return [
        ds("tank", 0, 1, props={"compression": "LZ4", "atime": "OFF"}),
        ds("tank/media", int(1.62 * TiB), 10, props={"quota": 2 * TiB, "recordsize": "1M"},
           comments="Films, series and music"),
        ds("tank/backups", int(2.64 * TiB), 11, props={"compression": "ZSTD"},
           comments="Laptop and phone backups"),
        ds("tank/apps", 180 * GiB, 12, comments="Application data"),
        ds("tank/vm-debian12", 66 * GiB, 13, type="VOLUME", volsize=64 * GiB,
           props={"refreservation": 66 * GiB, "recordsize": None}, comments="Disk of VM debian12"),
    ]


def snapshots() -> list[dict[str, Any]]:
    out = []
    for n in range(10):
        created = SEED_TIME - (10 - n) * HOUR
        stamp = datetime.fromtimestamp(created, tz=UTC).strftime("auto-%Y-%m-%d_%H-%M")
        out.append({"dataset": "tank/media", "snapshot_name": stamp, "txg": 100 + n, "created": created,
                    "used": (40 + 7 * n) * MiB, "referenced": int(1.6 * TiB) + n * GiB})
    out.append({"dataset": "tank/apps", "snapshot_name": "manual-before-nextcloud-upgrade", "txg": 95,
                "created": SEED_TIME - 2 * DAY, "used": 310 * MiB, "referenced": 170 * GiB})
    return out


def snapshot_tasks() -> list[dict[str, Any]]:
    return [{
        "id": 1, "dataset": "tank/media", "recursive": False, "lifetime_value": 2, "lifetime_unit": "WEEK",
        "enabled": True, "exclude": [], "naming_schema": "auto-%Y-%m-%d_%H-%M", "allow_empty": True,
        "schedule": {"minute": "0", "hour": "*", "dom": "*", "month": "*", "dow": "*",
                     "begin": "00:00", "end": "23:59"},
        "vmware_sync": False, "state": {"state": "FINISHED", "datetime": {"$date": int((SEED_TIME - HOUR) * 1000)}},
    }]


def smb_shares() -> list[dict[str, Any]]:
    return [{
        "id": 1, "purpose": "DEFAULT_SHARE", "path": "/mnt/tank/media", "name": "media",
        "comment": "Family media library", "enabled": True, "home": False, "ro": False, "browsable": True,
        "guestok": False, "hostsallow": [], "hostsdeny": [], "recyclebin": False, "abe": False, "acl": True,
        "durablehandle": True, "streams": True, "timemachine": False, "shadowcopy": True, "auxsmbconf": "",
        "locked": False,
    }]


def nfs_shares() -> list[dict[str, Any]]:
    return [{
        "id": 1, "path": "/mnt/tank/media", "aliases": [], "comment": "Read-only export for media players",
        "enabled": True, "ro": True, "maproot_user": None, "maproot_group": None, "mapall_user": "nobody",
        "mapall_group": "nogroup", "networks": ["192.168.1.0/24"], "hosts": [], "security": [], "locked": False,
    }]


def services() -> list[dict[str, Any]]:
    rows = [("cifs", True, "RUNNING"), ("nfs", True, "RUNNING"), ("ssh", True, "RUNNING"),
            ("ftp", False, "STOPPED"), ("iscsitarget", False, "STOPPED"), ("snmp", False, "STOPPED"),
            ("ups", False, "STOPPED"), ("nvmet", False, "STOPPED")]
    return [{"id": i, "service": name, "enable": enable, "state": state,
             "pids": [1200 + i * 7] if state == "RUNNING" else []}
            for i, (name, enable, state) in enumerate(rows, start=1)]


def groups() -> list[dict[str, Any]]:
    rows = [(1, 0, "root", True), (2, 544, "builtin_administrators", True), (3, 545, "builtin_users", True),
            (4, 65534, "nogroup", True), (5, 950, "admin", False), (6, 3000, "alice", False)]
    return [{"id": i, "gid": gid, "group": name, "name": name, "builtin": builtin, "smb": not builtin,
             "sudo_commands": [], "sudo_commands_nopasswd": [], "users": [], "local": True,
             "immutable": builtin, "roles": ["FULL_ADMIN"] if name == "builtin_administrators" else []}
            for i, gid, name, builtin in rows]


def users() -> list[dict[str, Any]]:
    def user(i: int, uid: int, name: str, full: str, group: int, builtin: bool,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
        record = {
            "id": i, "uid": uid, "username": name, "unixhash": "*", "smbhash": "*", "home": "/var/empty",
            "shell": "/usr/sbin/nologin", "full_name": full, "builtin": builtin, "smb": False,
            "group": {"id": group}, "groups": [], "password_disabled": False, "ssh_password_enabled": False,
            "sshpubkey": None, "locked": False, "sudo_commands": [], "sudo_commands_nopasswd": [],
            "email": None, "immutable": builtin, "local": True, "api_keys": [], "roles": [],
        }
        record.update(extra or {})
        return record

    return [
        user(1, 0, "root", "root", 1, True, {"shell": "/usr/bin/zsh", "home": "/root", "password_disabled": True}),
        user(2, 65534, "nobody", "Unprivileged user", 4, True),
        user(3, 950, "admin", "Administrator", 5, False,
             {"shell": "/usr/bin/zsh", "home": "/home/admin", "groups": [2], "roles": ["FULL_ADMIN"],
              "sudo_commands_nopasswd": ["ALL"], "email": "admin@example.invalid"}),
        user(4, 3000, "alice", "Alice Example", 6, False,
             {"shell": "/usr/bin/bash", "home": "/mnt/tank/media", "smb": True, "groups": [3],
              "email": "alice@example.invalid"}),
    ]


def apps() -> list[dict[str, Any]]:
    def app(name: str, state: str, version: str, latest: str, port: int, **extra: Any) -> dict[str, Any]:
        record = {
            "name": name, "id": name, "state": state, "upgrade_available": version != latest,
            "image_updates_available": False, "custom_app": False, "migrated": False,
            "human_version": f"{version}", "version": version, "latest_version": latest,
            "metadata": {"name": name, "train": "community", "app_version": version},
            "active_workloads": {"containers": 1 if state == "RUNNING" else 0,
                                 "used_ports": [{"container_port": port, "protocol": "tcp"}]},
            "notes": None, "portals": {"Web UI": f"http://{HOSTNAME}:{port}/"}, "config": {},
        }
        record.update(extra)
        return record

    return [app("plex", "RUNNING", "1.2.9", "1.2.9", 32400),
            app("nextcloud", "STOPPED", "2.0.3", "2.1.0", 9001)]


def vms() -> list[dict[str, Any]]:
    return [{
        "id": 1, "name": "debian12", "description": "Test VM for home automation", "vcpus": 1, "cores": 2,
        "threads": 1, "memory": 4096, "min_memory": None, "bootloader": "UEFI", "autostart": False,
        "time": "LOCAL", "shutdown_timeout": 90, "cpu_mode": "CUSTOM", "cpu_model": None,
        "machine_type": None, "arch_type": None, "hide_from_msr": False, "ensure_display_device": True,
        "hyperv_enlightenments": False, "status": {"state": "STOPPED", "pid": None, "domain_state": "SHUTOFF"},
    }]


def vm_devices() -> list[dict[str, Any]]:
    return [
        {"id": 1, "vm": 1, "order": 1001, "attributes": {"dtype": "DISK", "path": "/dev/zvol/tank/vm-debian12",
                                                          "type": "VIRTIO"}},
        {"id": 2, "vm": 1, "order": 1002, "attributes": {"dtype": "NIC", "type": "VIRTIO",
                                                          "mac": "00:a0:98:5b:12:34", "nic_attach": "br0"}},
        {"id": 3, "vm": 1, "order": 1003, "attributes": {"dtype": "DISPLAY", "type": "SPICE", "port": 5900,
                                                          "bind": "192.168.1.20", "web": True}},
    ]


def alerts() -> list[dict[str, Any]]:
    def alert(n: int, klass: str, level: str, text: str, when: float) -> dict[str, Any]:
        uid = fake_id("alert", n, length=32)
        uuid = f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:32]}"
        stamp = {"$date": int(when * 1000)}
        return {"uuid": uuid, "id": uuid, "source": "", "klass": klass, "args": None, "node": "Controller A",
                "key": fake_id("key", n, length=16), "datetime": stamp, "last_occurrence": stamp,
                "dismissed": False, "mail": None, "text": text, "formatted": text, "level": level,
                "one_shot": False}

    return [
        alert(1, "SMART", "WARNING", "Device: /dev/sdb [SAT], 8 Currently unreadable (pending) sectors.",
              SEED_TIME - 3 * HOUR),
        alert(2, "AppUpdate", "INFO", "An update is available for app nextcloud (2.0.3 -> 2.1.0).",
              SEED_TIME - DAY),
    ]


B2_CREDENTIAL: dict[str, Any] = {
    "id": 1, "name": "b2-main", "provider": "B2",
    "attributes": {"account": "0027a1b2c3d4e5f0000000001", "key": "K002SIMULATEDsecretKEYdoNotUse0000000"},
}


def cloudsync_tasks() -> list[dict[str, Any]]:
    return [{
        "id": 1, "description": "Media to B2", "direction": "PUSH", "transfer_mode": "SYNC",
        "path": "/mnt/tank/media", "credentials": 1,
        "attributes": {"bucket": "family-media", "folder": "/media", "chunk_size": 96},
        "schedule": {"minute": "0", "hour": "3", "dom": "*", "month": "*", "dow": "*"}, "enabled": True,
        "encryption": False, "filename_encryption": False, "encryption_password": "", "encryption_salt": "",
        "follow_symlinks": False, "transfers": 4, "bwlimit": [], "exclude": ["*.tmp"], "pre_script": "",
        "post_script": "", "args": "", "snapshot": False, "create_empty_src_dirs": False, "locked": False,
    }]


def cloud_backup_tasks() -> list[dict[str, Any]]:
    return [{
        "id": 1, "description": "Nightly restic backup of media", "path": "/mnt/tank/media", "credentials": 1,
        "attributes": {"bucket": "family-backups", "folder": "/restic/media"},
        "schedule": {"minute": "30", "hour": "2", "dom": "*", "month": "*", "dow": "*"}, "enabled": True,
        "password": "restic-SIMULATED-repo-passphrase", "keep_last": 7, "transfer_setting": "DEFAULT",
        "pre_script": "", "post_script": "", "snapshot": False, "include": [], "exclude": [], "args": "",
        "absolute_paths": False, "cache_path": None, "locked": False,
    }]


def backup_snapshot(task_id: int, n: int, when: float, paths: list[str]) -> dict[str, Any]:
    ident = fake_id("restic", task_id, n)
    return {"id": ident, "short_id": ident[:8], "hostname": HOSTNAME, "time": iso(when), "paths": paths,
            "tree": fake_id("tree", task_id, n), "username": "root", "tags": None}


def generic_collections() -> dict[str, list[dict[str, Any]]]:
    """Seed items for the actions answered by the generic per-verb handler."""
    return {
        "system_ntp_server": [
            {"id": i, "address": f"{i - 1}.debian.pool.ntp.org", "burst": False, "iburst": True,
             "prefer": False, "minpoll": 6, "maxpoll": 10} for i in (1, 2, 3)],
        "api_key": [{"id": 1, "name": "portcullis-gateway", "username": "admin", "user_identifier": 950,
                     "keyhash": "$pbkdf2-sha256$29000$SIMULATED", "created_at": {"$date": int(SEED_TIME * 1000)},
                     "expires_at": None, "local": True, "revoked": False}],
        "iscsi_target": [], "iscsi_extent": [], "iscsi_portal": [], "iscsi_initiator": [],
        "iscsi_targetextent": [],
        "network_interface": [{
            "id": "enp1s0", "name": "enp1s0", "type": "PHYSICAL", "ipv4_dhcp": False, "ipv6_auto": False,
            "aliases": [{"type": "INET", "address": "192.168.1.20", "netmask": 24}], "mtu": 1500,
            "state": {"name": "enp1s0", "link_state": "LINK_STATE_UP", "link_address": "00:a0:98:11:22:33"},
        }],
        "network_static_route": [],
        "certificate": [{"id": 1, "name": "truenas_default", "type": 8, "common": HOSTNAME, "san": [HOSTNAME],
                         "key_length": 2048, "key_type": "RSA", "lifetime": 397, "revoked": False,
                         "from": "Thu Nov 19 12:00:00 2026", "until": "Sat Dec 20 12:00:00 2027",
                         "privatekey": "-----BEGIN PRIVATE KEY-----\nSIMULATED\n-----END PRIVATE KEY-----"}],
        "acme_dns_authenticator": [],
        "replication": [{"id": 1, "name": "tank/media -> backup-nas", "direction": "PUSH", "transport": "SSH",
                         "source_datasets": ["tank/media"], "target_dataset": "backup/media", "recursive": False,
                         "auto": True, "enabled": True, "ssh_credentials": 1, "retention_policy": "SOURCE",
                         "periodic_snapshot_tasks": [1], "state": {"state": "FINISHED"}}],
        "cronjob": [{"id": 1, "user": "root", "command": "/usr/local/bin/prune-downloads.sh",
                     "description": "Prune old downloads", "enabled": True, "stdout": True, "stderr": False,
                     "schedule": {"minute": "15", "hour": "4", "dom": "*", "month": "*", "dow": "*"}}],
        "rsync_task": [], "initshutdown": [],
        "keychaincredential": [{"id": 1, "name": "backup-nas key", "type": "SSH_KEY_PAIR", "attributes": {
            "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nSIMULATED\n-----END OPENSSH PRIVATE KEY-----",
            "public_key": "ssh-ed25519 AAAAC3SIMULATED root@truenas-sim"}}],
        "kerberos_realm": [], "kerberos_keytab": [],
        "tunable": [{"id": 1, "type": "SYSCTL", "var": "vm.swappiness", "value": "10", "comment": "",
                     "enabled": True, "orig_value": "60"}],
        "privilege": [{"id": 1, "name": "Local Administrator", "builtin_name": "LOCAL_ADMINISTRATOR",
                       "local_groups": [2], "ds_groups": [], "allowlist": [], "roles": ["FULL_ADMIN"],
                       "web_shell": True}],
        "alertservice": [{"id": 1, "name": "Mail admin", "type": "Mail", "attributes": {
            "email": "admin@example.invalid"}, "level": "WARNING", "enabled": True}],
        "bootenv": [{"id": "25.10.0", "name": "25.10.0", "active": "NR", "activated": True, "keep": False,
                     "created": {"$date": int((SEED_TIME - 30 * DAY) * 1000)}, "rawspace": 3 * GiB},
                    {"id": "25.04.2", "name": "25.04.2", "active": "", "activated": False, "keep": True,
                     "created": {"$date": int((SEED_TIME - 120 * DAY) * 1000)}, "rawspace": 2 * GiB}],
    }


def configs() -> dict[str, dict[str, Any]]:
    """Singleton settings objects answered by *_config and changed by *_config_update / *_update."""
    return {
        "system_general": {"id": 1, "ui_port": 80, "ui_httpsport": 443, "ui_httpsredirect": True,
                           "timezone": "UTC", "language": "en", "kbdmap": "us", "crash_reporting": False,
                           "usage_collection": False, "ui_certificate": 1},
        "system_advanced": {"id": 1, "consolemenu": True, "serialconsole": False, "powerdaemon": False,
                            "motd": "Welcome to the TrueNAS simulator", "debugkernel": False},
        "mail": {"id": 1, "fromemail": "nas@example.invalid", "fromname": "truenas-sim",
                 "outgoingserver": "smtp.example.invalid", "port": 587, "security": "TLS", "smtp": True,
                 "user": "nas@example.invalid", "pass": "SIMULATED-smtp-password", "oauth": None},
        "smb": {"id": 1, "netbiosname": "TRUENAS-SIM", "netbiosalias": [], "workgroup": "WORKGROUP",
                "description": "TrueNAS simulator", "enable_smb1": False, "guest": "nobody",
                "admin_group": None, "bindip": [], "localmaster": False, "aapl_extensions": True,
                "multichannel": False},
        "nfs": {"id": 1, "servers": 4, "allow_nonroot": False, "protocols": ["NFSV3", "NFSV4"],
                "v4_krb": False, "v4_domain": "", "bindip": [], "mountd_port": None, "rpcstatd_port": None,
                "rpclockd_port": None, "userd_manage_gids": False},
        "iscsi_global": {"id": 1, "basename": "iqn.2005-10.org.freenas.ctl", "isns_servers": [],
                         "pool_avail_threshold": None, "alua": False},
        "network": {"id": 1, "hostname": HOSTNAME, "domain": "local", "ipv4gateway": "192.168.1.1",
                    "ipv6gateway": "", "nameserver1": "192.168.1.1", "nameserver2": "9.9.9.9",
                    "nameserver3": "", "httpproxy": "", "hosts": []},
        "ssh": {"id": 1, "tcpport": 22, "rootlogin": False, "passwordauth": False, "kerberosauth": False,
                "tcpfwd": False, "bindiface": [], "compression": False, "sftp_log_level": "",
                "weak_ciphers": []},
        "ftp": {"id": 1, "port": 21, "clients": 5, "ipconnections": 2, "loginattempt": 3, "timeout": 600,
                "rootlogin": False, "onlyanonymous": False, "onlylocal": False, "tls": False},
        "snmp": {"id": 1, "community": "public", "contact": "", "location": "", "traps": False, "v3": False,
                 "v3_username": "", "v3_authtype": "SHA"},
        "ups": {"id": 1, "mode": "MASTER", "identifier": "ups", "remotehost": "", "remoteport": 3493,
                "driver": "usbhid-ups", "port": "auto", "shutdown": "BATT", "shutdowntimer": 30},
        "docker": {"id": 1, "pool": "tank", "dataset": "tank/ix-apps", "enable_image_updates": True,
                   "address_pools": [{"base": "172.17.0.0/12", "size": 24}], "nvidia": False},
        "directory_services": {"id": 1, "service_type": None, "enable": False, "enable_account_cache": True,
                               "enable_dns_updates": True, "timeout": 10, "kerberos_realm": None,
                               "configuration": None},
        "kerberos": {"id": 1, "appdefaults_aux": "", "libdefaults_aux": ""},
        "reporting": {"id": 1, "tier0_days": 7, "tier1_days": 30, "tier1_update_interval": 300},
        "audit": {"id": 1, "retention": 7, "reservation": 0, "quota": 0, "quota_fill_warning": 75,
                  "quota_fill_critical": 95, "remote_logging_enabled": False},
        "update": {"id": 1, "autocheck": True, "profile": "GENERAL", "train": "TrueNAS-SCALE-Goldeye"},
    }
