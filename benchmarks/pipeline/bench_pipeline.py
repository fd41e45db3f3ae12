"""End-to-end pipeline benchmark: upload to PUBLISHED on the local stack, beside the floor, in one run.

    .venv/bin/python benchmarks/pipeline/bench_pipeline.py --cells 100000 --features 20000 --density 0.1 \\
        --executors local spark --runs 3

For each executor, on a stack of its own (`$WIDEVIEWS_HOME` under --workdir, started and stopped by
this script), the same synthetic upload (`wideviews synth`, streamed in bounded memory) is uploaded
`--runs` times in a row with `wideviews upload --wait`. Per run: upload to PUBLISHED, per-stage
times from the version's history, versions created by the one upload (must be 1), the state, and the
peak RSS of every process of the stack (each worker with its children, e.g. Spark's JVM and Python
workers; HBase; moto), sampled from /proc every 0.2 s.

The floor, measured in the same run on the same file:
  1. inflating the ZIP member (`zipfile`, read and discarded);
  2. pyarrow's `read_csv` of the inflated CSV, tuned (multithreaded, 64 MiB blocks, float32 columns);
  3. the kernel over all chunks of the published version (all groupings, one core per chunk as a
     Spark task; the staged chunks are read first, outside the timing).
floor = 1 + 2 + 3. Goal: upload to PUBLISHED within 2x the floor with the local executor.
Both in wall time and in CPU seconds (the stack's processes and the upload client against the floor's
own): this machine is shared, and the CPU a run spends is steadier than its wall time.

Exactness: 50 features drawn at random, every group of every grouping, all 12 statistics from the
HTTP API against pandas on those columns of the CSV (read in the same run).
Results: a table on stdout and benchmarks/results/pipeline-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cli.demo import stage_times  # noqa: E402
from services.compute.job import load_chunk_matrix  # noqa: E402
from services.compute.kernel import compute_group_stats  # noqa: E402
from services.compute.views import group_codes  # noqa: E402
from shared.adapters.s3 import s3_client  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.staging import read_cells, read_plan  # noqa: E402
from shared.stats import STATS  # noqa: E402

WIDEVIEWS = str(Path(sys.executable).parent / "wideviews")


def run(cmd: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, text=True, capture_output=True, check=False, **kwargs)


class ProcessMeter:
    """Peak resident memory and CPU seconds of each named process tree, from /proc.

    RSS is sampled every 0.2 s. CPU is user + system time of every process of the tree, children
    that exited included (their time is in the parent's cutime/cstime), counted from enter to exit:
    on a shared machine the CPU a run spends is steadier than its wall time."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.peak: dict[str, int] = {name: 0 for name in roots}
        # The largest single process of each tree (a worker apart from the JVM it starts).
        self.peak_process: dict[str, int] = {name: 0 for name in roots}
        self.cpu_s: dict[str, float] = {}
        self._cpu_start: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _children() -> dict[int, list[int]]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        return children

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime, stime, cutime, cstime: fields 14-17 of stat, 11-14 after the command.
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def _tree(self, pid: int, children: dict[int, list[int]]) -> list[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    def _cpu_totals(self) -> dict[str, float]:
        children = self._children()
        return {name: sum(self._cpu(p) for p in self._tree(pid, children)) for name, pid in self.roots.items()}

    def _sample(self) -> None:
        while not self._stop.is_set():
            children = self._children()
            for name, pid in self.roots.items():
                sizes = [self._rss(p) for p in self._tree(pid, children)]
                self.peak[name] = max(self.peak[name], sum(sizes))
                self.peak_process[name] = max(self.peak_process[name], max(sizes, default=0))
            self._stop.wait(0.2)

    def __enter__(self) -> "ProcessMeter":
        self._cpu_start = self._cpu_totals()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        end = self._cpu_totals()
        self.cpu_s = {name: end[name] - self._cpu_start[name] for name in self.roots}


def cpu_now(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (all its threads) or of its waited-for children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def synth(args: argparse.Namespace, path: Path, env: dict[str, str]) -> float:
    if path.exists():
        return 0.0
    started = time.monotonic()
    done = run(
        [WIDEVIEWS, "synth", "--cells", str(args.cells), "--features", str(args.features), "--density", str(args.density), "--groups", str(args.groups), "--out", str(path)],
        env,
    )
    if done.returncode:
        raise SystemExit(f"wideviews synth failed: {done.stderr[-2000:]}")
    return time.monotonic() - started


def floor_read(path: Path, workdir: Path) -> dict[str, float]:
    """Inflate the member alone, then pyarrow's tuned read_csv of the inflated file."""
    with zipfile.ZipFile(path) as archive:
        member = next(n for n in archive.namelist() if n.endswith("matrix.csv"))
        started, cpu = time.monotonic(), cpu_now()
        with archive.open(member) as src:
            while src.read(64 << 20):
                pass
        inflate_s, inflate_cpu_s = time.monotonic() - started, cpu_now() - cpu
        csv_path = workdir / "matrix.csv"
        if not csv_path.exists():
            with archive.open(member) as src, open(csv_path, "wb") as dst:
                while block := src.read(64 << 20):
                    dst.write(block)
    header = csv_path.open().readline().rstrip("\n").split(",")
    started, cpu = time.monotonic(), cpu_now()
    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(block_size=64 << 20, use_threads=True),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.float32() for name in header[1:]}),
    )
    rows = 0
    for batch in reader:
        rows += batch.num_rows
    parse_s, parse_cpu_s = time.monotonic() - started, cpu_now() - cpu
    return {
        "inflate_s": inflate_s, "parse_s": parse_s, "inflate_cpu_s": inflate_cpu_s, "parse_cpu_s": parse_cpu_s,
        "rows": rows, "csv_bytes": csv_path.stat().st_size, "loadavg": os.getloadavg()[0],
    }  # fmt: skip


def floor_kernel(settings: Settings, dataset_id: str, version_id: str) -> tuple[float, float]:
    """The kernel over every chunk of the version, all groupings, one core (staged reads untimed): wall and CPU s."""
    s3 = s3_client(settings)
    plan = read_plan(s3, settings, dataset_id, version_id)
    codes = group_codes(read_cells(s3, settings, plan), plan)
    wall = cpu = 0.0
    for chunk in range(plan.n_chunks):
        matrix = load_chunk_matrix(s3, settings, plan, chunk)
        started, thread_cpu = time.monotonic(), time.thread_time()
        for grouping, code in zip(plan.groupings, codes):
            compute_group_stats(matrix, code, len(grouping.groups), threads=1)
        wall += time.monotonic() - started
        cpu += time.thread_time() - thread_cpu
    return wall, cpu


def spot_check(settings: Settings, csv_path: Path, zip_path: Path, dataset_id: str, version_id: str, n_features: int, seed: int) -> dict[str, int]:
    """50 random features × every group of every grouping × 12 stats: API vs pandas on the CSV."""
    header = csv_path.open().readline().rstrip("\n").split(",")
    rng = np.random.default_rng(seed)
    features = sorted(rng.choice(header[1:], size=min(n_features, len(header) - 1), replace=False).tolist())
    # Streamed in blocks, keeping only the chosen columns: a whole-file read_csv of 5 GB takes 7 GB.
    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(block_size=64 << 20),
        convert_options=pacsv.ConvertOptions(include_columns=[header[0], *features], column_types={header[0]: pa.string(), **{f: pa.float64() for f in features}}),
    )
    matrix = pa.Table.from_batches(list(reader)).to_pandas().set_index(header[0])
    with zipfile.ZipFile(zip_path) as archive:
        member = next(n for n in archive.namelist() if n.endswith("metadata.csv"))
        with archive.open(member) as f:
            metadata = pd.read_csv(f, dtype=str, index_col=0, keep_default_na=False, na_values=[""])
    metadata = metadata.loc[matrix.index.astype(str)]
    base = f"http://{settings.query_host}:{settings.query_port}"
    info = json.loads(urllib.request.urlopen(f"{base}/v1/datasets/{dataset_id}?version={version_id}", timeout=60).read())
    checked = mismatches = 0
    for grouping, groups in info["groupings"].items():
        names = [g["name"] for g in groups]
        query = urllib.parse.urlencode({"grouping": grouping, "features": ",".join(features), "version": version_id})
        body = json.loads(urllib.request.urlopen(f"{base}/v1/datasets/{dataset_id}/aggregates?{query}", timeout=120).read())
        keys = metadata[grouping].fillna("(missing)")
        for fi, feature in enumerate(features):
            for gi, name in enumerate(names):
                values = matrix.loc[keys.to_numpy() == name, feature].to_numpy()
                nz = values[values != 0]
                ref = {
                    "count": values.size, "nnz": nz.size, "sum": values.sum(), "mean": values.mean() if values.size else np.nan,
                    "var": values.var(ddof=1) if values.size > 1 else np.nan, "min": values.min() if values.size else np.nan,
                    "max": values.max() if values.size else np.nan, "median": np.median(values) if values.size else np.nan,
                    "q1": np.quantile(values, 0.25) if values.size else np.nan, "q3": np.quantile(values, 0.75) if values.size else np.nan,
                    "frac_expressing": nz.size / values.size if values.size else np.nan,
                    "mean_expressing": nz.sum() / nz.size if nz.size else np.nan,
                }  # fmt: skip
                for stat in STATS:
                    got = body["stats"][stat][fi][gi]
                    want = ref[stat]
                    checked += 1
                    same = (got is None and np.isnan(want)) or (got is not None and np.isclose(got, want, rtol=1e-9, atol=1e-9))
                    mismatches += 0 if same else 1
    return {"features": len(features), "checked": checked, "mismatches": mismatches}


def bench_executor(args: argparse.Namespace, executor: str, zip_path: Path, workdir: Path) -> dict[str, Any]:
    home = workdir / f"stack-{executor}"
    env = dict(os.environ, WIDEVIEWS_HOME=str(home), WIDEVIEWS_EXECUTOR=executor)
    up = run([WIDEVIEWS, "stack", "up"], env, timeout=900)
    if up.returncode:
        raise SystemExit(f"stack up failed: {up.stderr[-3000:]}")
    try:
        state = json.loads((home / "stack.json").read_text())
        pids = {name: c["pid"] for name, c in state["components"].items()}
        os.environ["WIDEVIEWS_HOME"] = str(home)
        settings = Settings.load(home=home)
        runs = []
        for i in range(args.runs):
            started, client_cpu, load = time.monotonic(), cpu_now(resource.RUSAGE_CHILDREN), os.getloadavg()[0]
            with ProcessMeter(pids) as meter:
                done = run([WIDEVIEWS, "upload", str(zip_path), "--dataset", "bench", "--wait", "--json", "--timeout", "7200"], env)
            wall = time.monotonic() - started
            cpu = dict(meter.cpu_s, client=cpu_now(resource.RUSAGE_CHILDREN) - client_cpu)
            version = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
            status = dataset_status(env)
            record = next((v for v in status["versions"] if v["version_id"] == version.get("version_id")), None)
            history = _history(settings, version.get("version_id"))
            runs.append(
                {
                    "run": i + 1,
                    "state": version.get("state"),
                    "error": version.get("error"),
                    "upload_to_published_s": wall,
                    "stages_s": dict(stage_times(history)) if history else {},
                    "versions_total": len(status["versions"]),
                    "n_chunks": record["n_chunks"] if record else None,
                    "peak_rss_bytes": dict(meter.peak),
                    "peak_process_rss_bytes": dict(meter.peak_process),
                    "cpu_s": cpu,
                    "loadavg_start_end": [load, os.getloadavg()[0]],
                    "version_id": version.get("version_id"),
                }
            )
            print(f"  {executor} run {i + 1}: {version.get('state')} in {wall:.1f} s ({sum(cpu.values()):.0f} CPU s); versions so far {len(status['versions'])}", flush=True)
        last = runs[-1]["version_id"]
        result: dict[str, Any] = {"runs": runs}
        if last:
            result["kernel_floor_s"], result["kernel_floor_cpu_s"] = floor_kernel(settings, "bench", last)
            result["spot_check"] = spot_check(settings, workdir / "matrix.csv", zip_path, "bench", last, 50, args.seed)
        return result
    finally:
        run([WIDEVIEWS, "stack", "down"], env, timeout=900)


def dataset_status(env: dict[str, str], attempts: int = 5) -> dict[str, Any]:
    """`wideviews status bench --json`, retried: a loaded machine may time one call out."""
    for attempt in range(attempts):
        done = run([WIDEVIEWS, "status", "bench", "--json"], env)
        if done.returncode == 0:
            return json.loads(done.stdout)["datasets"][0]
        print(f"  status failed (attempt {attempt + 1}): {done.stderr.strip().splitlines()[-1:]}", flush=True)
        time.sleep(5 * (attempt + 1))
    raise SystemExit("wideviews status kept failing")


def _history(settings: Settings, version_id: str | None) -> Any:
    if not version_id:
        return None
    import asyncio

    from shared.adapters.aws import open_aws
    from shared.records import Records

    async def get() -> Any:
        async with open_aws(settings) as aws:
            return await Records(aws.dynamodb, settings).get_version("bench", version_id)

    return asyncio.run(get())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=20_000)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--groups", type=int, default=30)
    parser.add_argument("--executors", nargs="+", default=["local", "spark"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wideviews-bench-pipeline"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    zip_path = args.workdir / f"synth-{args.cells}x{args.features}-{args.density}.zip"
    env = dict(os.environ)
    synth_s = synth(args, zip_path, env)
    print(f"upload {zip_path} ({zip_path.stat().st_size / 1e9:.2f} GB; synth {synth_s:.0f} s)", flush=True)
    floor = floor_read(zip_path, args.workdir)
    print(f"floor: inflate {floor['inflate_s']:.1f} s, pyarrow read_csv {floor['parse_s']:.1f} s ({floor['csv_bytes'] / 1e9:.2f} GB CSV)", flush=True)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "floor": floor, "executors": {}}
    for executor in args.executors:
        results["executors"][executor] = bench_executor(args, executor, zip_path, args.workdir)
    print()
    print(f"{'executor':<8} {'run':>3} {'state':<10} {'total s':>8} {'x floor':>8} {'CPU s':>7} {'x floor':>8} {'ingest':>7} {'compute':>8} {'load':>7} {'verify':>7} {'versions':>8}  peak RSS MiB")
    for executor, result in results["executors"].items():
        floor_s = floor["inflate_s"] + floor["parse_s"] + result.get("kernel_floor_s", 0.0)
        floor_cpu_s = floor["inflate_cpu_s"] + floor["parse_cpu_s"] + result.get("kernel_floor_cpu_s", 0.0)
        result["floor_s"], result["floor_cpu_s"] = floor_s, floor_cpu_s
        for r in result["runs"]:
            st = r["stages_s"]
            rss = " ".join(f"{k}={v / 2**20:.0f}" for k, v in sorted(r["peak_rss_bytes"].items()))
            cpu = sum(r["cpu_s"].values())
            print(
                f"{executor:<8} {r['run']:>3} {str(r['state']):<10} {r['upload_to_published_s']:8.1f} {r['upload_to_published_s'] / floor_s:8.2f} {cpu:7.0f} {cpu / floor_cpu_s:8.2f} "
                f"{st.get('INGESTING', 0):7.1f} {st.get('COMPUTING', 0):8.1f} {st.get('LOADING', 0):7.1f} {st.get('VALIDATING', 0):7.1f} {r['versions_total']:>8}  {rss}"
            )
            print(f"{'':<8} {'':>3} largest single process MiB: " + " ".join(f"{k}={v / 2**20:.0f}" for k, v in sorted(r["peak_process_rss_bytes"].items())))
            print(f"{'':<8} {'':>3} CPU s by process: " + " ".join(f"{k}={v:.0f}" for k, v in sorted(r["cpu_s"].items())) + f"; load average {r['loadavg_start_end'][0]:.1f} -> {r['loadavg_start_end'][1]:.1f}")
        print(
            f"{executor:<8} floor {floor_s:.1f} s = inflate {floor['inflate_s']:.1f} + parse {floor['parse_s']:.1f} + kernel {result.get('kernel_floor_s', 0):.1f}; "
            f"CPU {floor_cpu_s:.0f} s = {floor['inflate_cpu_s']:.0f} + {floor['parse_cpu_s']:.0f} + {result.get('kernel_floor_cpu_s', 0):.0f}; spot check {result.get('spot_check')}"
        )
    out = ROOT / "benchmarks" / "results" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
