"""Fast tests of the TrueNAS simulator's state and dispatcher, without MCP."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from truenas_sim import seed
from truenas_sim.catalogue import UMBRELLA, describe, load_catalogue
from truenas_sim.errors import ApiError
from truenas_sim.handlers import Dispatcher
from truenas_sim.ops_protection import BACKUP_GROWTH
from truenas_sim.state import State

TSV = Path(__file__).resolve().parents[1] / "truenas_sim" / "tools.tsv"


class FakeClock:
    def __init__(self, start: float = seed.SEED_TIME + seed.DAY) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> State:
    return State(clock=clock, job_seconds=2.0)


@pytest.fixture
def flat(state: State) -> Dispatcher:
    return Dispatcher(state)


def ok(dispatcher: Dispatcher, tool: str, **args: Any) -> Any:
    outcome = dispatcher.call(tool, args)
    assert not outcome.is_error, outcome.text
    return json.loads(outcome.text)


def error(dispatcher: Dispatcher, tool: str, **args: Any) -> str:
    outcome = dispatcher.call(tool, args)
    assert outcome.is_error, outcome.text
    return outcome.text


def sample(schema: dict[str, Any], name: str = "") -> Any:
    """A minimal value that satisfies a schema (required keys only)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: sample(props[k], k) for k in schema.get("required", []) if k in props}
    if kind == "array":
        return [sample(schema["items"], name)] if schema.get("items") else []
    return {"string": {"path": "/mnt/tank/media", "dataset": "tank/media"}.get(name, "x"),
            "number": 1, "boolean": True}.get(kind, "x")


# -- catalogue ------------------------------------------------------------------------------------


def test_catalogue_matches_tsv() -> None:
    rows = list(csv.DictReader(TSV.open(encoding="utf-8"), delimiter="\t"))
    cat = load_catalogue()
    assert len(rows) == 279 and len(cat.tools) == 278
    for row in rows:
        spec = cat.umbrella if row["name"] == UMBRELLA else cat.tools[row["name"]]
        assert spec.schema == {"type": "object", **json.loads(row["params"])}
        assert spec.confirm == (row["confirm_required"] == "yes")
    assert sum(s.confirm for s in cat.tools.values()) == 32
    assert len(cat.categories) == 18


def test_every_tool_has_a_description() -> None:
    cat = load_catalogue()
    texts = {name: describe(spec) for name, spec in cat.tools.items()}
    assert all(len(t) > 20 for t in texts.values())
    assert "recursive" in texts["dataset_delete"] and "confirm: true" in texts["dataset_delete"]
    assert "job" in texts["cloud_backup_run"]


# -- seed -----------------------------------------------------------------------------------------


def test_seed_is_the_demo_host(state: State) -> None:
    pool = state.pools[1]
    assert pool["name"] == "tank" and pool["topology"]["data"][0]["type"] == "RAIDZ1"
    assert len(pool["topology"]["data"][0]["children"]) == 3
    assert 0.67 < pool["allocated"] / pool["size"] < 0.69
    assert [d["name"] for d in state.disks.values() if d["pool"] is None] == ["sdd"]
    assert {"tank/media", "tank/backups", "tank/apps", "tank/vm-debian12"} <= set(state.datasets)
    assert state.datasets["tank/media"]["props"]["quota"] == 2 * seed.TiB
    assert state.datasets["tank/vm-debian12"]["type"] == "VOLUME"
    assert sum(s["snapshot_name"].startswith("auto-") for s in state.snapshots.values()) == 10
    assert {"root", "admin", "alice"} <= {u["username"] for u in state.users.values()}
    assert state.apps["plex"]["state"] == "RUNNING" and state.apps["nextcloud"]["upgrade_available"]
    assert len(state.alerts) == 2 and len(state.vms) == 1
    cred = state.cloud_credentials[1]
    assert cred["name"] == "b2-main" and cred["attributes"]["key"]
    assert state.cloud_backup_tasks[1]["keep_last"] == 7 and len(state.backup_snapshots[1]) == 5


def test_seed_is_deterministic(clock: FakeClock) -> None:
    a, b = State(clock=clock), State(clock=clock)
    assert a.resource("datasets") == b.resource("datasets")
    assert a.resource("data-protection") == b.resource("data-protection")


# -- datasets and snapshots -----------------------------------------------------------------------


def test_dataset_create_list_get(flat: Dispatcher) -> None:
    created = ok(flat, "dataset_create", name="tank/media/photos", quota=10 * seed.GiB, compression="ZSTD")
    assert created["quota"]["parsed"] == 10 * seed.GiB and created["compression"]["source"] == "LOCAL"
    assert created["recordsize"] == {"parsed": "1M", "rawvalue": "1M", "value": "1M", "source": "INHERITED"}
    names = [d["name"] for d in ok(flat, "dataset_list")]
    assert "tank/media/photos" in names
    assert ok(flat, "dataset_get", id="tank/media")["children"] == ["tank/media/photos"]


@pytest.mark.parametrize("args, message", [
    ({"name": "tank/media"}, "already exists"),
    ({"name": "tank/nope/x"}, "parent dataset"),
    ({"name": "tank"}, "full name"),
    ({"name": "tank/z", "quota": 1000}, "at least 1 GiB"),
    ({"name": "tank/z", "type": "VOLUME"}, "needs volsize"),
    ({"name": "tank/vm-debian12/x"}, "zvol"),
])
def test_dataset_create_validation(flat: Dispatcher, args: dict[str, Any], message: str) -> None:
    text = error(flat, "dataset_create", **args)
    assert text.startswith("Error: TrueNAS API error 422: ") and message in text


def test_dataset_delete_needs_recursive_for_children_and_snapshots(flat: Dispatcher, state: State) -> None:
    ok(flat, "dataset_create", name="tank/backups/laptop")
    assert "has children" in error(flat, "dataset_delete", id="tank/backups", confirm=True)
    assert "snapshots" in error(flat, "dataset_delete", id="tank/apps", confirm=True)
    allocated = state.pools[1]["allocated"]
    assert ok(flat, "dataset_delete", id="tank/backups", confirm=True, recursive=True) is True
    assert "tank/backups" not in state.datasets and "tank/backups/laptop" not in state.datasets
    assert state.pools[1]["allocated"] < allocated
    assert "root dataset" in error(flat, "dataset_delete", id="tank", confirm=True, recursive=True)


def test_dataset_delete_removes_its_shares(flat: Dispatcher, state: State) -> None:
    ok(flat, "dataset_delete", id="tank/media", confirm=True, recursive=True)
    assert ok(flat, "smb_share_list") == [] and ok(flat, "nfs_share_list") == []


def test_missing_dataset_is_404(flat: Dispatcher) -> None:
    assert error(flat, "dataset_get", id="tank/nope") == \
        "Error: TrueNAS API error 404: [ENOENT] dataset 'tank/nope' does not exist"


def test_snapshot_rollback_refuses_newer_unless_recursive(flat: Dispatcher, state: State) -> None:
    snaps = ok(flat, "snapshot_list", dataset="tank/media")
    assert len(snaps) == 10
    oldest = snaps[0]["id"]
    text = error(flat, "snapshot_rollback", id=oldest, confirm=True)
    assert "9 newer snapshots" in text and "recursive" in text
    assert len(ok(flat, "snapshot_list", dataset="tank/media")) == 10
    ok(flat, "snapshot_rollback", id=oldest, confirm=True, recursive=True)
    assert [s["id"] for s in ok(flat, "snapshot_list", dataset="tank/media")] == [oldest]
    latest = ok(flat, "snapshot_create", dataset="tank/media", name="manual")
    assert ok(flat, "snapshot_rollback", id=latest["id"], confirm=True) is None


def test_snapshot_clone_promote_and_dependants(flat: Dispatcher) -> None:
    snap = ok(flat, "snapshot_list", dataset="tank/media")[3]["id"]
    assert ok(flat, "snapshot_clone", id=snap, dataset_dst="tank/media-restore") is True
    clone = ok(flat, "dataset_get", id="tank/media-restore")
    assert clone["origin"]["parsed"] == snap
    assert "dependent clones" in error(flat, "snapshot_delete", id=snap, confirm=True)
    ok(flat, "dataset_promote", id="tank/media-restore")
    assert ok(flat, "snapshot_delete", id=snap, confirm=True) is True
    existing = ok(flat, "snapshot_list", dataset="tank/media")[0]["snapshot_name"]
    assert "already exists" in error(flat, "snapshot_create", dataset="tank/media", name=existing)


def test_snapshot_task_run_takes_a_snapshot(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    task = ok(flat, "snapshot_task_create", dataset="tank/apps", naming_schema="hourly-%Y%m%d-%H%M")
    ok(flat, "snapshot_task_run", id=task["id"])
    names = [s["snapshot_name"] for s in ok(flat, "snapshot_list", dataset="tank/apps")]
    assert any(n.startswith("hourly-") for n in names)
    assert "must contain" in error(flat, "snapshot_task_create", dataset="tank/apps", naming_schema="x")


# -- jobs, pools, disks ---------------------------------------------------------------------------


def test_cloud_backup_job_lifecycle(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    allocated = state.pools[1]["allocated"]
    job_id = ok(flat, "cloud_backup_run", id=1)
    assert state.job_view(job_id)["state"] == "WAITING"
    clock.advance(1.0)
    running = state.job_view(job_id)
    assert running["state"] == "RUNNING" and 0 < running["progress"]["percent"] < 100
    assert ok(flat, "cloud_backup_list")[0]["job"]["id"] == job_id
    clock.advance(1.1)
    assert state.job_view(job_id)["state"] == "SUCCESS"
    snaps = ok(flat, "cloud_backup_snapshots", id=1)
    assert len(snaps) == 6 and snaps[-1]["paths"] == ["/mnt/tank/media"]
    assert set(snaps[-1]) >= {"id", "hostname", "time", "paths"}
    assert state.pools[1]["allocated"] == allocated + BACKUP_GROWTH


def test_cloud_backup_queue_of_one_and_prune(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    first = ok(flat, "cloud_backup_run", id=1)
    second = ok(flat, "cloud_backup_run", id=1)
    assert second != first and ok(flat, "cloud_backup_run", id=1) == second
    assert state.job_view(second)["state"] == "WAITING"
    clock.advance(2.5)
    assert state.job_view(first)["state"] == "SUCCESS"
    assert state.job_view(second)["state"] == "RUNNING"
    third = ok(flat, "cloud_backup_run", id=1)
    assert third not in (first, second)
    clock.advance(10)
    assert [state.job_view(j)["state"] for j in (first, second, third)] == ["SUCCESS"] * 3
    snaps = ok(flat, "cloud_backup_snapshots", id=1)
    assert len(snaps) == 7  # 5 seeded + 3 new, pruned to keep_last 7
    ok(flat, "cloud_backup_update", id=1, keep_last=2)
    ok(flat, "cloud_backup_run", id=1)
    clock.advance(3)
    assert len(ok(flat, "cloud_backup_snapshots", id=1)) == 2
    assert "at least 1" in error(flat, "cloud_backup_update", id=1, keep_last=0)


def test_cloud_backup_abort(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    job_id = ok(flat, "cloud_backup_run", id=1)
    queued = ok(flat, "cloud_backup_run", id=1)
    assert ok(flat, "cloud_backup_abort", id=1) is True
    assert state.job_view(job_id)["state"] == "ABORTED" and state.job_view(queued)["state"] == "ABORTED"
    clock.advance(5)
    assert len(state.backup_snapshots[1]) == 5


def test_cloudsync_run_and_credentials(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    assert ok(flat, "cloudsync_list")[0]["job"]["state"] == "SUCCESS"
    job_id = ok(flat, "cloudsync_run", id=1)
    clock.advance(3)
    assert ok(flat, "cloudsync_get", id=1)["job"] == state.job_view(job_id)
    assert "used by tasks" in error(flat, "cloudsync_credentials_delete", id=1)
    new = ok(flat, "cloudsync_credentials_create", name="s3-archive", provider="S3",
             attributes={"access_key_id": "AKIA", "secret_access_key": "s3cret"})
    assert new["attributes"]["secret_access_key"] == "s3cret"
    assert ok(flat, "cloudsync_credentials_delete", id=new["id"]) is True


def test_pool_scrub_progresses(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    job_id = ok(flat, "pool_scrub", id=1, action="START")
    assert "already running" in error(flat, "pool_scrub", id=1, action="START")
    clock.advance(1.2)
    scan = ok(flat, "pool_get", id=1)["scan"]
    assert scan["state"] == "SCANNING" and 0 < scan["percentage"] < 100
    clock.advance(1)
    assert ok(flat, "pool_status", id=1)["scan"]["state"] == "FINISHED"
    assert state.job_view(job_id)["state"] == "SUCCESS"


def test_pool_export_and_create(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    ok(flat, "pool_export", id=1, cascade=True, destroy=False, confirm=True)
    clock.advance(3)
    assert ok(flat, "pool_list") == [] and ok(flat, "dataset_list") == [] and ok(flat, "smb_share_list") == []
    job_id = ok(flat, "pool_create", name="fresh", confirm=True,
                topology={"data": [{"type": "MIRROR", "disks": ["sda", "sdb"]}]})
    assert "in use" in error(flat, "pool_create", name="other", confirm=True,
                             topology={"data": [{"type": "STRIPE", "disks": ["sda"]}]})
    clock.advance(3)
    assert state.job_view(job_id)["state"] == "SUCCESS"
    assert [p["name"] for p in ok(flat, "pool_list")] == ["fresh"]
    assert ok(flat, "pool_get_disks", id=state.job_view(job_id)["result"]["id"]) == ["sda", "sdb"]


def test_disk_wipe_refuses_pool_member(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    member = state.disks[next(k for k, d in state.disks.items() if d["name"] == "sda")]
    text = error(flat, "disk_wipe", id=member["identifier"], dev_name="sda", mode="QUICK", confirm=True)
    assert "in use by pool tank" in text
    job_id = ok(flat, "disk_wipe", id="sdd", dev_name="sdd", mode="QUICK", confirm=True)
    clock.advance(3)
    assert state.job_view(job_id)["state"] == "SUCCESS"


def test_replace_disk_clears_smart_alert(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    ok(flat, "pool_replace_disk", id=1, label="sdb", disk="sdd", confirm=True)
    clock.advance(3)
    assert ok(flat, "pool_get_disks", id=1) == ["sda", "sdc", "sdd"]
    assert all(a["klass"] != "SMART" for a in ok(flat, "alert_list"))


# -- accounts, services, apps, alerts --------------------------------------------------------------


def test_users_and_builtins(flat: Dispatcher) -> None:
    assert "cannot be deleted" in error(flat, "user_delete", id=1, confirm=True)
    bob = ok(flat, "user_create", username="bob", full_name="Bob", group_create=True, password="pw")
    assert bob["uid"] >= 3000 and bob["group"]["bsdgrp_group"] == "bob" and "password" not in bob
    assert "already in use" in error(flat, "user_create", username="bob", full_name="B", group_create=True)
    assert ok(flat, "user_delete", id=bob["id"], confirm=True, delete_group=True) == bob["id"]
    assert "bob" not in {g["name"] for g in ok(flat, "group_list")}
    assert "cannot be deleted" in error(flat, "group_delete", id=1, confirm=True)


def test_services_start_stop(flat: Dispatcher) -> None:
    ok(flat, "service_stop", service="cifs")
    cifs = next(s for s in ok(flat, "service_list") if s["service"] == "cifs")
    assert cifs["state"] == "STOPPED" and cifs["pids"] == []
    ok(flat, "service_start", service="ftp")
    assert ok(flat, "service_get", id=4)["state"] == "RUNNING"
    assert "404" in error(flat, "service_start", service="nope")


def test_apps_start_stop_upgrade(flat: Dispatcher, state: State, clock: FakeClock) -> None:
    ok(flat, "app_start", id="nextcloud")
    assert ok(flat, "app_get", id="nextcloud")["state"] == "DEPLOYING"
    clock.advance(3)
    assert ok(flat, "app_get", id="nextcloud")["state"] == "RUNNING"
    ok(flat, "app_upgrade", id="nextcloud")
    clock.advance(3)
    app = ok(flat, "app_get", id="nextcloud")
    assert app["version"] == "2.1.0" and not app["upgrade_available"]
    assert all(a["klass"] != "AppUpdate" for a in ok(flat, "alert_list"))
    ok(flat, "app_stop", id="plex")
    clock.advance(3)
    assert ok(flat, "app_get", id="plex")["state"] == "STOPPED"


def test_alert_dismiss_restore(flat: Dispatcher) -> None:
    uuid = ok(flat, "alert_list")[0]["uuid"]
    ok(flat, "alert_dismiss", uuid=uuid)
    assert ok(flat, "alert_list")[0]["dismissed"] is True
    ok(flat, "alert_restore", uuid=uuid)
    assert ok(flat, "alert_list")[0]["dismissed"] is False


def test_shares(flat: Dispatcher) -> None:
    share = ok(flat, "smb_share_create", path="/mnt/tank/backups", name="backups")
    assert "already exists" in error(flat, "smb_share_create", path="/mnt/tank/apps", name="BACKUPS")
    assert "does not exist" in error(flat, "smb_share_create", path="/mnt/tank/nowhere")
    assert ok(flat, "smb_share_delete", id=share["id"], confirm=True) is True
    nfs = ok(flat, "nfs_share_create", path="/mnt/tank/backups", networks=["10.0.0.0/8"])
    assert ok(flat, "nfs_share_get", id=nfs["id"])["networks"] == ["10.0.0.0/8"]


def test_vm_start_stop(flat: Dispatcher, clock: FakeClock) -> None:
    ok(flat, "vm_start", id=1)
    assert ok(flat, "vm_status", id=1)["state"] == "RUNNING"
    assert "already running" in error(flat, "vm_start", id=1)
    ok(flat, "vm_stop", id=1)
    clock.advance(3)
    assert ok(flat, "vm_status", id=1)["state"] == "STOPPED"


def test_generic_collections_and_configs(flat: Dispatcher, clock: FakeClock) -> None:
    route = ok(flat, "network_static_route_create", destination="10.9.0.0/16", gateway="192.168.1.254")
    assert ok(flat, "network_static_route_list") == [route]
    assert ok(flat, "network_static_route_delete", id=route["id"]) is True
    assert "does not exist" in error(flat, "iscsi_target_delete", id=99, confirm=True)
    assert ok(flat, "ssh_config_update", tcpport=2222)["tcpport"] == 2222
    assert ok(flat, "ssh_config")["tcpport"] == 2222
    job_id = ok(flat, "tunable_create", type="SYSCTL", var="net.core.somaxconn", value="1024")
    assert isinstance(job_id, int)
    clock.advance(3)
    assert any(t["var"] == "net.core.somaxconn" for t in ok(flat, "tunable_list"))
    assert len(ok(flat, "system_ntp_servers")) == 3


# -- dispatcher: schema, confirm, umbrella, raw API, counters ---------------------------------------


def test_schema_violations_are_error_results(flat: Dispatcher) -> None:
    assert error(flat, "dataset_create") == \
        "Error: invalid arguments for dataset_create: 'name' is a required property"
    text = error(flat, "dataset_create", name="tank/x", quota="big", atime="MAYBE")
    assert "quota: 'big' is not of type 'number'" in text and "atime: 'MAYBE' is not one of" in text
    assert "unknown tool" in error(flat, "no_such_tool")


def test_confirm_gate_changes_nothing(flat: Dispatcher, state: State) -> None:
    before = json.dumps(state.resource("datasets")), json.dumps(state.resource("pools"))
    for tool, args in [("dataset_delete", {"id": "tank/media", "confirm": False}),
                       ("dataset_delete", {"id": "tank/media"}),
                       ("pool_export", {"id": 1, "cascade": True, "destroy": True, "confirm": False}),
                       ("system_reboot", {})]:
        outcome = flat.call(tool, args)
        assert not outcome.is_error and outcome.text.startswith("Not confirmed")
    assert "confirm: 'yes' is not of type 'boolean'" in error(flat, "dataset_delete", id="tank/media", confirm="yes")
    assert "'id' is a required property" in error(flat, "dataset_delete", confirm=True)
    assert (json.dumps(state.resource("datasets")), json.dumps(state.resource("pools"))) == before
    assert state.jobs.next_deadline() is None


def test_umbrella_dispatch(state: State) -> None:
    umbrella = Dispatcher(state, umbrella=True)
    assert [s.name for s in umbrella.listed_specs()] == [UMBRELLA]
    index = json.loads(umbrella.call(UMBRELLA, {}).text)
    assert len(index["categories"]) == 18
    storage = json.loads(umbrella.call(UMBRELLA, {"category": "storage"}).text)
    assert "dataset_create" in [a["action"] for a in storage["actions"]]
    wrong = umbrella.call(UMBRELLA, {"category": "system", "action": "dataset_list"})
    assert wrong.is_error and json.loads(wrong.text)["correct_category"] == "storage"
    assert umbrella.call(UMBRELLA, {"category": "storage", "action": "nope"}).is_error
    got = umbrella.call(UMBRELLA, {"category": "storage", "action": "dataset_get", "params": {"id": "tank/apps"}})
    assert json.loads(got.text)["name"] == "tank/apps"
    gated = umbrella.call(UMBRELLA, {"category": "storage", "action": "dataset_delete",
                                     "params": {"id": "tank/apps", "confirm": False}})
    assert gated.text.startswith("Not confirmed") and "tank/apps" in state.datasets
    assert umbrella.call("dataset_list", {}).is_error
    assert state.calls["truenas"] == 6 and state.calls["dataset_get"] == 1 and state.calls["dataset_delete"] == 1


def test_raw_api_routes(flat: Dispatcher, state: State) -> None:
    media = ok(flat, "truenas_api_call", method="GET", path="/api/v2.0/pool/dataset/id/tank%2Fmedia")
    assert media["name"] == "tank/media"
    job_id = ok(flat, "truenas_api_call", method="POST", path="/cloud_backup/id/1/sync")
    jobs = ok(flat, "truenas_api_call", method="GET", path=f"/core/get_jobs?id={job_id}")
    assert [j["method"] for j in jobs] == ["cloud_backup.sync"]
    assert "404" in error(flat, "truenas_api_call", method="GET", path="/nowhere")
    assert "400" in error(flat, "truenas_api_call", method="POST", path="/pool/dataset", body="{nope")
    ok(flat, "truenas_api_call", method="POST", path="/pool/dataset", body='{"name": "tank/raw"}')
    assert "tank/raw" in state.datasets
    assert state.calls["truenas_api_call"] == 6 and state.calls["dataset_create"] == 1


def test_call_counter(flat: Dispatcher, state: State) -> None:
    flat.call("pool_list", {})
    flat.call("pool_list", {})
    flat.call("dataset_get", {"id": "tank/nope"})
    report = state.resource("debug/calls")
    assert report["total"] == 3 and report["counts"] == {"dataset_get": 1, "pool_list": 2}
    assert [e["outcome"] for e in report["recent"]] == ["ok", "ok", "api_error"]


def test_every_action_answers(state: State) -> None:
    dispatcher = Dispatcher(state)
    for spec in load_catalogue().tools.values():
        outcome = dispatcher.call(spec.name, sample(spec.schema))
        assert outcome.kind in ("ok", "api_error"), (spec.name, outcome.text)
        if outcome.is_error:
            assert outcome.text.startswith("Error: TrueNAS API error "), outcome.text
    state.clock = lambda: seed.SEED_TIME + 30 * seed.DAY  # type: ignore[method-assign]
    state.jobs.clock = state.clock
    state.tick()
    assert not state.jobs.has_active()
    assert all(j.state != "FAILED" or "does not exist" in (j.error or "") for j in state.jobs.jobs.values())


def test_api_error_text() -> None:
    assert str(ApiError(422, "[EINVAL] x: y")) == "TrueNAS API error 422: [EINVAL] x: y"
