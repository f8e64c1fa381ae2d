"""The TrueNAS simulator over real MCP: a subprocess on stdio (and one on Streamable HTTP), the SDK client."""

from __future__ import annotations

import contextlib
import csv
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError, StdioServerParameters

from truenas_sim.server import Simulator
from truenas_sim.state import State

ROOT = Path(__file__).resolve().parents[2]
TSV = ROOT / "truenas_sim" / "tools.tsv"
JOB_SECONDS = "0.6"
FINAL = {"SUCCESS", "FAILED", "ABORTED"}

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tsv_rows() -> list[dict[str, str]]:
    with TSV.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@contextlib.asynccontextmanager
async def simulator(*args: str, mode: str = "auto") -> AsyncIterator[Client]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "truenas_sim", *args], cwd=str(ROOT),
                                   env={"TRUENAS_SIM_JOB_SECONDS": JOB_SECONDS})
    async with Client(params, mode=mode, read_timeout_seconds=20) as client:
        yield client


async def call(client: Client, tool: str, **args: Any) -> Any:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


async def call_text(client: Client, tool: str, **args: Any) -> tuple[bool, str]:
    result = await client.call_tool(tool, args)
    assert len(result.content) == 1 and result.content[0].type == "text"
    return result.is_error, result.content[0].text


async def read(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    return json.loads(result.contents[0].text)


async def wait_job(client: Client, job_id: int, states: set[str] = FINAL, timeout: float = 15) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            job = await read(client, f"truenas://jobs/{job_id}")
            if job["state"] in states:
                return job
            await anyio.sleep(0.05)


# -- listing --------------------------------------------------------------------------------------


async def test_lists_278_tools_with_exact_schemas() -> None:
    rows = {r["name"]: r for r in tsv_rows() if r["name"] != "truenas"}
    async with simulator(mode="legacy") as client:
        assert client.server_info is not None and client.server_info.name == "truenas-sim"
        tools = (await client.list_tools()).tools
    assert len(tools) == 278 and {t.name for t in tools} == set(rows)
    for tool in tools:
        assert tool.input_schema == {"type": "object", **json.loads(rows[tool.name]["params"])}
        assert tool.annotations is None and tool.description
    by_name = {t.name: t for t in tools}
    assert by_name["dataset_delete"].input_schema["required"] == ["id", "confirm"]
    assert by_name["pool_scrub"].input_schema["properties"]["action"]["enum"] == ["START", "STOP", "PAUSE"]


async def test_umbrella_mode_lists_one_tool_and_dispatches() -> None:
    umbrella_row = next(r for r in tsv_rows() if r["name"] == "truenas")
    async with simulator("--umbrella") as client:
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == ["truenas"]
        assert tools[0].input_schema == {"type": "object", **json.loads(umbrella_row["params"])}
        index = await call(client, "truenas")
        assert {c["name"] for c in index["categories"]} >= {"storage", "data_protection", "sharing"}
        actions = await call(client, "truenas", category="storage")
        assert "dataset_list" in [a["action"] for a in actions["actions"]]
        datasets = await call(client, "truenas", category="storage", action="dataset_list", params={"pool": "tank"})
        assert "tank/media" in [d["name"] for d in datasets]
        is_error, text = await call_text(client, "truenas", category="system", action="dataset_list")
        assert is_error and json.loads(text)["correct_category"] == "storage"
        is_error, text = await call_text(client, "truenas", category="storage", action="dataset_explode")
        assert is_error and "unknown action" in text
        is_error, text = await call_text(client, "dataset_list")
        assert is_error and "unknown tool" in text


# -- behaviour ------------------------------------------------------------------------------------


async def test_dataset_create_then_list_and_delete_rules() -> None:
    async with simulator() as client:
        created = await call(client, "dataset_create", name="tank/media/photos", quota=50 * 2**30)
        assert created["id"] == "tank/media/photos"
        assert "tank/media/photos" in [d["name"] for d in await call(client, "dataset_list")]
        is_error, text = await call_text(client, "dataset_delete", id="tank/media", confirm=True)
        assert is_error and text.startswith("Error: TrueNAS API error 422: ") and "recursive" in text
        assert "tank/media" in [d["name"] for d in await call(client, "dataset_list")]
        assert await call(client, "dataset_delete", id="tank/media", confirm=True, recursive=True) is True
        names = [d["name"] for d in await call(client, "dataset_list")]
        assert "tank/media" not in names and "tank/media/photos" not in names


async def test_confirm_gate_changes_nothing() -> None:
    async with simulator() as client:
        before = await read(client, "truenas://datasets"), await read(client, "truenas://pools")
        for tool, args in [("dataset_delete", {"id": "tank/media", "confirm": False}),
                           ("pool_export", {"id": 1, "cascade": True, "destroy": True, "confirm": False}),
                           ("user_delete", {"id": 4})]:
            is_error, text = await call_text(client, tool, **args)
            assert not is_error and text.startswith("Not confirmed")
        after = await read(client, "truenas://datasets"), await read(client, "truenas://pools")
        assert after == before
        assert len((await read(client, "truenas://users"))["users"]) == 4
        assert all(j["id"] <= 7 for j in await read(client, "truenas://jobs"))


async def test_cloud_backup_run_job_snapshot_and_growth() -> None:
    async with simulator() as client:
        allocated = (await call(client, "pool_get", id=1))["allocated"]
        before = await call(client, "cloud_backup_snapshots", id=1)
        job_id = await call(client, "cloud_backup_run", id=1)
        assert isinstance(job_id, int)
        assert (await read(client, f"truenas://jobs/{job_id}"))["state"] in {"WAITING", "RUNNING"}
        await wait_job(client, job_id, {"RUNNING"} | FINAL)
        job = await wait_job(client, job_id)
        assert job["state"] == "SUCCESS" and job["method"] == "cloud_backup.sync"
        after = await call(client, "cloud_backup_snapshots", id=1)
        assert len(after) == len(before) + 1
        assert after[-1]["paths"] == ["/mnt/tank/media"] and after[-1]["hostname"] == "truenas-sim"
        assert (await call(client, "pool_get", id=1))["allocated"] > allocated
        assert (await call(client, "cloud_backup_list"))[0]["job"]["id"] == job_id


async def test_cloud_backup_queue_of_one() -> None:
    async with simulator() as client:
        first = await call(client, "cloud_backup_run", id=1)
        second = await call(client, "cloud_backup_run", id=1)
        third = await call(client, "cloud_backup_run", id=1)
        assert second != first and third == second
        assert (await read(client, f"truenas://jobs/{second}"))["state"] == "WAITING"
        done = await wait_job(client, first)
        assert done["state"] == "SUCCESS"
        assert (await wait_job(client, second))["state"] == "SUCCESS"
        jobs = await call(client, "truenas_api_call", method="GET", path="/core/get_jobs?method=cloud_backup.sync")
        assert [j["id"] for j in jobs if j["id"] >= first] == [first, second]
        snaps = await call(client, "cloud_backup_snapshots", id=1)
        assert len(snaps) == 7  # 5 seeded + 2 runs, and keep_last is 7


async def test_bad_arguments_and_missing_dataset() -> None:
    async with simulator() as client:
        is_error, text = await call_text(client, "dataset_get")
        assert is_error and text == "Error: invalid arguments for dataset_get: 'id' is a required property"
        is_error, text = await call_text(client, "pool_get", id="one")
        assert is_error and "id: 'one' is not of type 'number'" in text
        is_error, text = await call_text(client, "dataset_get", id="tank/nope")
        assert is_error and text.startswith("Error: TrueNAS API error 404: ")
        is_error, text = await call_text(client, "disk_wipe", id="sda", dev_name="sda", mode="QUICK", confirm=True)
        assert is_error and "in use by pool tank" in text
        is_error, text = await call_text(client, "user_delete", id=1, confirm=True)
        assert is_error and "built-in" in text


async def test_resources_and_call_counter() -> None:
    async with simulator() as client:
        listed = (await client.list_resources()).resources
        uris = {str(r.uri) for r in listed}
        assert len(uris) >= 12 and "truenas://debug/calls" in uris
        for uri in sorted(uris):
            assert await read(client, uri) is not None
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["truenas://jobs/{id}"]
        assert (await read(client, "truenas://system/info"))["hostname"] == "truenas-sim"
        with pytest.raises(MCPError):
            await client.read_resource("truenas://jobs/999")
        assert (await read(client, "truenas://debug/calls"))["total"] == 0
        await call(client, "service_stop", service="nfs")
        await call(client, "service_list")
        await call_text(client, "dataset_delete", id="tank/apps", confirm=False)
        counter = await read(client, "truenas://debug/calls")
        assert counter["total"] == 3
        assert counter["counts"] == {"dataset_delete": 1, "service_list": 1, "service_stop": 1}
        assert [e["outcome"] for e in counter["recent"]] == ["ok", "ok", "not_confirmed"]
        services = await read(client, "truenas://services")
        assert next(s for s in services if s["service"] == "nfs")["state"] == "STOPPED"


async def test_every_tool_answers_over_mcp() -> None:
    from tests.test_truenas_sim_state import sample

    rows = [r for r in tsv_rows() if r["name"] != "truenas"]
    async with simulator() as client:
        for row in rows:
            schema = {"type": "object", **json.loads(row["params"])}
            is_error, text = await call_text(client, row["name"], **sample(schema))
            assert not is_error or text.startswith("Error: TrueNAS API error "), (row["name"], text)
            assert "simulator failure" not in text
        assert (await read(client, "truenas://debug/calls"))["total"] == 278


# -- in-process: the job timer fires without anyone reading -----------------------------------------


async def test_job_timer_advances_without_reads() -> None:
    sim = Simulator(State(job_seconds=0.3))
    async with Client(sim.server) as client:
        job_id = json.loads((await client.call_tool("cloud_backup_run", {"id": 1})).content[0].text)
        job = sim.state.jobs.jobs[job_id]
        with anyio.fail_after(5):
            while job.state != "SUCCESS":  # only the server's timer can move it: nothing here ticks
                await anyio.sleep(0.02)
        assert len(sim.state.backup_snapshots[1]) == 6


# -- Streamable HTTP ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def http_simulator(port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "truenas_sim", "--http", "--port", str(port)], cwd=ROOT,
                                env={"PATH": "/usr/bin:/bin", "TRUENAS_SIM_JOB_SECONDS": JOB_SECONDS},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
                await stream.aclose()
                return
            except OSError:
                await anyio.sleep(0.05)


async def test_streamable_http(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "truenas-sim.log"
    with http_simulator(port, log) as proc:
        await wait_listening(port, proc, log)
        for mode in ("auto", "legacy"):
            with anyio.fail_after(20):
                async with Client(f"http://127.0.0.1:{port}/mcp", mode=mode) as client:
                    assert len((await client.list_tools()).tools) == 278
                    job_id = await call(client, "cloud_backup_run", id=1)
                    assert (await wait_job(client, job_id))["state"] == "SUCCESS"
                    assert (await read(client, "truenas://debug/calls"))["counts"]["cloud_backup_run"] >= 1
