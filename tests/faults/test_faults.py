"""Faults on the real stack: killed workers, HBase restarted mid-load, the AWS endpoint cut off, readers
during successive publishes, concurrent uploads, DLQ replay, rollback and gc. Every version that should
be published is, with values equal to pandas', and no reader ever sees a mixed or partial version."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import happybase
import numpy as np
import pytest

from cli import stack as local_stack
from cli.sample import sample_frames, write_upload_zip
from services.publisher.verify import verify_version
from shared.adapters.hbase import HBase, view_table
from shared.adapters.s3 import get_json, s3_client
from shared.config import Settings
from shared.errors import Permanent
from shared.staging import check_key, read_plan
from tests.e2e.reference import Reference, assert_version_matches, cli, http_json, query_url, wait_for
from tests.tcp import pipe

pytestmark = pytest.mark.stack
WORKERS = ("ingest", "compute", "loader", "publisher")


def _dataset(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _zip(tmp: Path, name: str, cells: int, genes: int, seed: int) -> Path:
    matrix, metadata = sample_frames(cells, genes, seed=seed)
    return write_upload_zip(tmp / f"{name}.zip", matrix, metadata, {"groupings": ["cell_type", "donor"]})


def _status(stack: Settings, dataset_id: str) -> dict[str, Any]:
    return json.loads(cli(stack, "status", dataset_id, "--json").stdout)["datasets"][0]


def _versions(stack: Settings, dataset_id: str) -> list[dict[str, Any]]:
    """The dataset's version records ([] before ingest has filed one)."""
    out = json.loads(cli(stack, "status", "--json").stdout)["datasets"]
    return [v for d in out if d["dataset"] == dataset_id for v in d["versions"]]


def _wait_published(stack: Settings, dataset_id: str, n_versions: int, timeout_s: float) -> dict[str, Any]:
    """Wait until `n_versions` versions exist and none is still building; returns the dataset status."""

    def settled() -> dict[str, Any] | None:
        out = cli(stack, "status", dataset_id, "--json")
        if out.returncode != 0:
            return None
        entry = json.loads(out.stdout)["datasets"][0]
        states = [v["state"] for v in entry["versions"]]
        done = len(states) >= n_versions and all(s in ("PUBLISHED", "REPLACED", "OVERTAKEN", "FAILED") for s in states)
        # `status` reads the pointer, then the versions: wait until both show the same publication.
        published = {v["version_id"] for v in entry["versions"] if v["state"] == "PUBLISHED"}
        return entry if done and (not published or entry["current_version"] in published) else None

    return wait_for(settled, timeout_s, f"{n_versions} settled versions of {dataset_id}", interval_s=1.0)


def _upload(stack: Settings, path: Path, dataset_id: str) -> None:
    done = cli(stack, "upload", str(path), "--dataset", dataset_id)
    assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def _thrift(stack: Settings) -> Iterator[happybase.Connection]:
    conn = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port)
    try:
        yield conn
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    """Whether `pid` is a running process (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _kill(stack: Settings, name: str) -> int:
    """SIGKILL the component's process, which must be running; returns its pid once it is dead."""
    record = local_stack.StackState.read(stack.home).components.get(name)
    assert record is not None, f"{name} has no process record"
    assert _alive(record.pid), f"{name}'s pid {record.pid} was not running before the kill"
    os.kill(record.pid, signal.SIGKILL)
    wait_for(lambda: not _alive(record.pid), 10, f"{name} (pid {record.pid}) to die")
    return record.pid


def _still_building(stack: Settings, dataset_id: str) -> bool:
    """True while the dataset has no version yet or one that is still being built."""
    db = boto3.client("dynamodb", **stack.aws_client_kwargs())
    items = db.query(
        TableName=stack.versions_table, KeyConditionExpression="dataset_id = :d", ExpressionAttributeValues={":d": {"S": dataset_id}}, ConsistentRead=True
    )["Items"]
    return not items or any(i["state"]["S"] in ("INGESTING", "COMPUTING", "LOADING", "VALIDATING") for i in items)


def test_killing_workers_at_random_points_loses_nothing(stack: Settings, tmp_path: Path) -> None:
    """20 kill -9 of random workers at random moments over several uploads; every version publishes right."""
    rng = random.Random(20261125)
    kills: list[tuple[str, int, float, bool]] = []
    for trial in range(5):
        dataset_id = _dataset(f"kill{trial}")
        path = _zip(tmp_path, f"k{trial}", 150, 100, seed=100 + trial)
        started = time.monotonic()
        _upload(stack, path, dataset_id)
        for _ in range(4):
            # A random moment: fault injection, not synchronisation. Short enough that the first kill
            # (the upload's own time plus 0.2-2.5 s) usually meets the version while it is built: a
            # dataset this small publishes in a few seconds, and a restart takes about two.
            time.sleep(rng.uniform(0.2, 2.5))
            victim = rng.choice(WORKERS)
            building = _still_building(stack, dataset_id)
            pid = _kill(stack, victim)
            kills.append((victim, pid, round(time.monotonic() - started, 1), building))
            local_stack.restart_component(stack, victim)
        entry = _wait_published(stack, dataset_id, 1, 600)
        version = entry["versions"][0]
        assert version["state"] == "PUBLISHED", version
        assert entry["current_version"] == version["version_id"]
        assert_version_matches(stack, dataset_id, version["version_id"], Reference.from_zip(path), ["cell_type", "donor"])
        # Kills after the publication prove nothing: each upload met at least one while it was building.
        assert any(building for *_, building in kills[-4:]), (dataset_id, kills[-4:])
    assert {name for name, *_ in kills} == set(WORKERS), kills
    print(f"\nkills survived: {len(kills)} {kills}")


def _in_flight(stack: Settings, role: str) -> int:
    """Messages of the role's queue that a worker has received and not yet deleted."""
    sqs = boto3.client("sqs", **stack.aws_client_kwargs())
    url = sqs.get_queue_url(QueueName=stack.queue_name(role))["QueueUrl"]  # type: ignore[arg-type]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_hbase_restart_during_loading_resumes(stack: Settings, tmp_path: Path) -> None:
    dataset_id = _dataset("hbase-restart")
    path = _zip(tmp_path, "hb", 200, 160, seed=7)
    # The loads wait in their queue until HBase is down: a compute unit of a small dataset is loaded
    # in a few seconds, too fast to catch reliably from outside.
    local_stack.stop_component(stack, "loader")
    try:
        _upload(stack, path, dataset_id)
        wait_for(lambda: any(v["n_chunks"] and v["computed"] == v["n_chunks"] for v in _versions(stack, dataset_id)), 300, "compute to finish")
        # HBase itself (HMaster with its RegionServer) goes down; the Thrift gateway stays, as on EMR.
        local_stack.stop_component(stack, "hbase-master")
    finally:
        loader_log = stack.home / "logs" / "loader.log"
        logged_before = loader_log.stat().st_size if loader_log.exists() else 0
        local_stack.restart_component(stack, "loader")

    def loader_met_hbase_down() -> bool:
        # A load in progress (received, not deleted), or one already handled and logged as a retry.
        with open(loader_log, "rb") as f:
            f.seek(logged_before)
            return _in_flight(stack, "load") > 0 or dataset_id.encode() in f.read()

    # HBase comes back only once the loader has taken a load message while HBase was down.
    wait_for(loader_met_hbase_down, 120, "the loader to take a load message while HBase is down")
    local_stack.restart_component(stack, "hbase-master")
    entry = _wait_published(stack, dataset_id, 1, 900)
    version = entry["versions"][0]
    assert version["state"] == "PUBLISHED", version
    assert_version_matches(stack, dataset_id, version["version_id"], Reference.from_zip(path), ["cell_type", "donor"])


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 that can refuse and drop every connection for a while (bounded, stops itself)."""

    def __init__(self, target_port: int, *, lifetime_s: float = 900) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        self.stopped = threading.Event()
        self.deadline = time.monotonic() + lifetime_s
        self.connections: list[socket.socket] = []
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            if self.cut.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()
        self.listener.close()

    def cut_off(self) -> None:
        self.cut.set()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self.connections = []

    def restore(self) -> None:
        self.cut.clear()

    def stop(self) -> None:
        self.stopped.set()


def test_workers_cut_off_from_aws_for_30_s_back_off_and_resume(stack: Settings, tmp_path: Path) -> None:
    moto_port = int(stack.aws_endpoint_url.rsplit(":", 1)[1])  # type: ignore[union-attr]
    proxy = CuttableProxy(moto_port)
    # The stack's workers make way for workers that reach AWS only through the proxy.
    for name in WORKERS:
        local_stack.stop_component(stack, name)
    env = {**stack.child_env(), "WIDEVIEWS_AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-m", f"services.{name}.main"], env=env, cwd=str(stack.project_root), stdout=subprocess.DEVNULL, stderr=open(logs / f"{name}.log", "wb"))  # noqa: SIM115
        for name in WORKERS
    ]
    try:
        dataset_id = _dataset("aws-cut")
        path = _zip(tmp_path, "cut", 200, 160, seed=9)
        _upload(stack, path, dataset_id)
        wait_for(lambda: _status(stack, dataset_id)["versions"], 120, "the version to exist")
        proxy.cut_off()
        time.sleep(30)  # the fault's length, not a synchronisation: refused connections are asserted below
        proxy.restore()
        entry = _wait_published(stack, dataset_id, 1, 900)
        version = entry["versions"][0]
        assert version["state"] == "PUBLISHED", (version, [(logs / f"{n}.log").read_text()[-2000:] for n in WORKERS])
        assert_version_matches(stack, dataset_id, version["version_id"], Reference.from_zip(path), ["cell_type", "donor"])
        assert proxy.refused > 0, "the workers never tried to reach AWS during the cut"
        assert any("unreachable" in (logs / f"{n}.log").read_text() or "retry" in (logs / f"{n}.log").read_text() for n in WORKERS)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        proxy.stop()
        for name in WORKERS:
            local_stack.restart_component(stack, name)


def test_readers_see_one_consistent_version_through_ten_publishes(stack: Settings, tmp_path: Path) -> None:
    dataset_id = _dataset("readers")
    paths = [_zip(tmp_path, f"r{i}", 80, 30, seed=300 + i) for i in range(10)]
    refs: dict[str, Reference] = {}
    _upload(stack, paths[0], dataset_id)
    entry = _wait_published(stack, dataset_id, 1, 300)
    refs[entry["current_version"]] = Reference.from_zip(paths[0])
    problems: list[str] = []
    seen: list[str] = []
    stop = threading.Event()
    features = list(refs[entry["current_version"]].matrix.columns[:10])

    def read() -> None:
        while not stop.is_set():
            status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", features=",".join(features), stats="sum,nnz,count"))
            if status != 200:
                problems.append(f"aggregates {status}: {body}")
                continue
            version = body["version"]
            seen.append(version)
            # The transpose of the same version agrees with the stats it served.
            for i, feature in enumerate(features[:3]):
                s2, values = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/features/{feature}/values", version=version))
                if s2 != 200 or values["version"] != version:
                    problems.append(f"values {s2} {values.get('version')} != {version}")
                    continue
                total = sum(v or 0 for v in body["stats"]["sum"][i])
                nnz = sum(body["stats"]["nnz"][i])
                if len(values["values"]) != nnz or not np.isclose(sum(values["values"]), total, rtol=1e-9, atol=1e-9):
                    problems.append(f"{version}: {feature} stats (nnz {nnz}, sum {total}) disagree with the transpose")

    readers = [threading.Thread(target=read, daemon=True) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for i in range(1, 10):
            _upload(stack, paths[i], dataset_id)
            entry = _wait_published(stack, dataset_id, i + 1, 300)
            refs[entry["current_version"]] = Reference.from_zip(paths[i])
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=60)
    assert not problems, problems[:5]
    assert len(set(seen)) >= 5, "readers saw too few of the publishes to mean anything"
    assert set(seen) <= set(refs)
    states = [v["state"] for v in _status(stack, dataset_id)["versions"]]
    # Each upload was published before the next was made: all nine were replaced, none overtaken.
    assert states.count("PUBLISHED") == 1 and states.count("REPLACED") == 9


def test_older_upload_finishing_later_is_overtaken_never_current(stack: Settings, tmp_path: Path) -> None:
    """Two uploads build side by side; the newer is published first, the older validates later."""
    dataset_id = _dataset("race")
    local_stack.stop_component(stack, "publisher")
    publisher_log = stack.home / "logs" / "publisher.log"
    logged_before = publisher_log.stat().st_size if publisher_log.exists() else 0
    try:
        _upload(stack, _zip(tmp_path, "older", 150, 80, seed=41), dataset_id)
        # Upload order is the S3 event's: the newer upload is made once ingest has filed the older.
        wait_for(lambda: len(_versions(stack, dataset_id)) == 1, 120, "the older upload's version")
        _upload(stack, _zip(tmp_path, "newer", 100, 40, seed=42), dataset_id)

        def both_validating() -> dict[str, str] | None:
            versions = _status(stack, dataset_id)["versions"]
            ready = len(versions) == 2 and all(v["state"] == "VALIDATING" for v in versions)
            return {Path(v["upload_key"]).stem: v["version_id"] for v in versions} if ready else None

        ids = wait_for(both_validating, 300, "both versions to be ready for publication")
        # The publisher handles the newer version first, then the older one that finished later.
        asyncio.run(_publish_in_process(stack, dataset_id, [ids["newer"], ids["older"]]))
    finally:
        local_stack.restart_component(stack, "publisher")
    entry = _status(stack, dataset_id)
    states = {v["version_id"]: v["state"] for v in entry["versions"]}
    assert states == {ids["newer"]: "PUBLISHED", ids["older"]: "OVERTAKEN"}
    assert entry["current_version"] == ids["newer"] and entry["generation"] == 1
    # The queued publish messages, now handled by the restarted publisher, change nothing: wait
    # until it has logged its outcome for both of them.
    wait_for(lambda: _handled(publisher_log, logged_before, dataset_id) >= 2, 120, "the publisher to handle both queued messages")
    again = _status(stack, dataset_id)
    assert (again["current_version"], again["generation"]) == (ids["newer"], 1)
    assert {v["version_id"]: v["state"] for v in again["versions"]} == states


def _handled(log_path: Path, offset: int, dataset_id: str) -> int:
    """How many messages about the dataset the worker has logged an outcome for since `offset`."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        lines = [json.loads(line) for line in f.read().splitlines() if line.startswith(b"{")]
    return sum(1 for line in lines if line.get("dataset") == dataset_id and "outcome" in line)


async def _publish_in_process(stack: Settings, dataset_id: str, version_ids: list[str]) -> None:
    from services.publisher.handler import handle_publish_version
    from shared.adapters.aws import open_aws
    from shared.bootstrap import build_deps
    from shared.messages import PublishVersion

    async with open_aws(stack) as aws:
        deps = build_deps(stack, aws)
        for version_id in version_ids:
            assert await handle_publish_version(PublishVersion(dataset_id=dataset_id, version_id=version_id), deps) == []


def test_failed_ingest_is_replayed_from_the_dlq_once_the_cause_is_gone(stack: Settings, tmp_path: Path) -> None:
    dataset_id = _dataset("replay")
    path = _zip(tmp_path, "replay", 120, 50, seed=51)
    s3 = boto3.client("s3", **stack.aws_client_kwargs())
    key = f"uploads/{dataset_id}/{path.name}"
    local_stack.stop_component(stack, "ingest")
    try:
        s3.upload_file(str(path), stack.uploads_bucket, key)
        # The cause: the object vanished before ingest (the uploads bucket is versioned: delete the version).
        gone = s3.head_object(Bucket=stack.uploads_bucket, Key=key)["VersionId"]
        s3.delete_object(Bucket=stack.uploads_bucket, Key=key, VersionId=gone)
    finally:
        local_stack.restart_component(stack, "ingest")
    entry = _wait_published(stack, dataset_id, 1, 120)
    assert entry["versions"][0]["state"] == "FAILED" and "no longer exists" in entry["versions"][0]["error"]
    listed = json.loads(cli(stack, "dlq", "list", "ingest", "--json").stdout)
    ours = [m for m in listed if key in (m["error"] or "")]
    assert len(ours) == 1, listed
    # The cause is gone: the same bytes are back (same ETag). That PUT is an upload of its own too,
    # which builds a second version; the replay revives the failed one.
    s3.upload_file(str(path), stack.uploads_bucket, key)
    replayed = cli(stack, "dlq", "replay", "ingest", "--id", ours[0]["id"])
    assert replayed.returncode == 0, replayed.stderr
    failed_version = entry["versions"][0]["version_id"]
    final = _wait_published(stack, dataset_id, 2, 300)
    by_id = {v["version_id"]: v for v in final["versions"]}
    assert by_id[failed_version]["state"] in ("PUBLISHED", "REPLACED", "OVERTAKEN"), by_id[failed_version]
    assert by_id[failed_version]["error"] is None
    assert ours[0]["id"] not in {m["id"] for m in json.loads(cli(stack, "dlq", "list", "ingest", "--json").stdout)}


def test_publisher_verification_catches_missing_short_and_altered_views(stack: Settings, tmp_path: Path) -> None:
    dataset_id = _dataset("verify")
    path = _zip(tmp_path, "verify", 120, 50, seed=61)
    _upload(stack, path, dataset_id)
    version_id = _wait_published(stack, dataset_id, 1, 300)["current_version"]
    s3 = s3_client(stack)
    plan = read_plan(s3, stack, dataset_id, version_id)
    hbase = HBase(stack, size=1)
    verify_version(s3, hbase, stack, plan)  # intact: passes
    stats = view_table(stack, dataset_id, version_id, "stats_donor")
    # The publisher reads back only the rows compute recorded as samples (one per HFile): alter one.
    sampled = bytes.fromhex(get_json(s3, stack.staging_bucket, check_key(dataset_id, version_id, "stats_donor", 0))["hfiles"][0]["sample_row"])
    with _thrift(stack) as conn:
        original = conn.table(stats).row(sampled)
        conn.table(stats).put(sampled, {b"s:mean": original[b"s:mean"][:-1] + bytes([original[b"s:mean"][-1] ^ 1])})
    with pytest.raises(Permanent, match=f"stats_donor: sampled row {sampled!r} differs from what compute wrote"):
        verify_version(s3, hbase, stack, plan)
    with _thrift(stack) as conn:
        conn.table(stats).put(sampled, original)
    verify_version(s3, hbase, stack, plan)  # mended: passes again
    with _thrift(stack) as conn:
        conn.table(stats).delete(b"GENE00003")
    with pytest.raises(Permanent, match="stats_donor: table has 49 rows, compute wrote 50"):
        verify_version(s3, hbase, stack, plan)
    with _thrift(stack) as conn:
        conn.table(stats).put(b"GENE00003", original)
    hbase.drop_table(view_table(stack, dataset_id, version_id, "features"))
    with pytest.raises(Permanent, match="features: table .* is missing"):
        verify_version(s3, hbase, stack, plan)


def test_rollback_and_gc_keep_what_readers_may_use(stack: Settings, tmp_path: Path) -> None:
    dataset_id = _dataset("gc")
    paths = [_zip(tmp_path, f"g{i}", 90, 30, seed=70 + i) for i in range(3)]
    versions = []
    for i, path in enumerate(paths):
        _upload(stack, path, dataset_id)
        versions.append(_wait_published(stack, dataset_id, i + 1, 300)["current_version"])
    v1, v2, v3 = versions
    done = cli(stack, "gc", "--grace-hours", "0")
    assert done.returncode == 0, done.stderr
    removed = [r for r in json.loads(done.stdout)["removed"] if r["dataset"] == dataset_id]
    assert [r["version"] for r in removed] == [v1]
    tables = HBase(stack, size=1).list_tables()
    assert not any(t.startswith(f"wideviews:{dataset_id}_{v1}_") for t in tables)
    assert any(t.startswith(f"wideviews:{dataset_id}_{v2}_") for t in tables)
    rolled = cli(stack, "rollback", dataset_id)
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["current_version"] == v2
    url = query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", features="GENE00001")
    wait_for(lambda: http_json(url)[1].get("version") == v2, stack.pointer_cache_s + 5, "readers on v2")
    assert_version_matches(stack, dataset_id, v2, Reference.from_zip(paths[1]), ["cell_type"])
    entry = _status(stack, dataset_id)
    states = {v["version_id"]: v["state"] for v in entry["versions"]}
    assert states == {v1: "DELETED", v2: "PUBLISHED", v3: "REPLACED"}
    # Rolling back to a deleted version is refused and changes nothing.
    refused = cli(stack, "rollback", dataset_id, "--to", v1)
    assert refused.returncode == 1 and "DELETED" in refused.stderr
    assert _status(stack, dataset_id)["current_version"] == v2


def test_a_view_table_disabled_while_loading_is_waited_out_and_the_version_publishes(stack: Settings, tmp_path: Path) -> None:
    """The issue's FAILED version: `Table ... is not currently available.` during a load. Now a wait, then PUBLISHED."""
    dataset_id = _dataset("unavailable")
    path = _zip(tmp_path, "unavailable", 150, 400, seed=13)  # 10 chunks: loads into the transpose keep coming
    moto_log = stack.home / "logs" / "moto.log"
    loader_log = stack.home / "logs" / "loader.log"
    loader_log_size = loader_log.stat().st_size
    _upload(stack, path, dataset_id)
    with _thrift(stack) as conn:
        prefix = f"{stack.hbase_namespace}:{dataset_id}_"
        table = wait_for(lambda: next((t.decode() for t in conn.tables() if t.decode().startswith(prefix) and t.decode().endswith("_features")), None), 300, "the transpose's table")
        conn.disable_table(table)
        disabled_at = moto_log.stat().st_size
        version_id = table[len(prefix) :].split("_")[0]
        listing = f"prefix=staging/{dataset_id}/{version_id}/hfiles/features/".encode()

        def load_attempted() -> bool:
            with open(moto_log, "rb") as f:
                f.seek(disabled_at)
                return listing in f.read()

        # A loader lists a transpose chunk's HFiles only when it starts loading them: into the disabled table.
        wait_for(load_attempted, 300, "a load into the disabled table")
        conn.enable_table(table)
    entry = _wait_published(stack, dataset_id, 1, 600)
    version = entry["versions"][0]
    assert version["state"] == "PUBLISHED", version
    assert_version_matches(stack, dataset_id, version["version_id"], Reference.from_zip(path), ["cell_type", "donor"])
    with open(loader_log, "rb") as f:
        f.seek(loader_log_size)
        assert f"into {table} waited".encode() in f.read()
