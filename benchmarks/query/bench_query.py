"""Read API under load: the local query server over HTTP, and the bare Thrift reads beside it.

    wideviews synth --cells 100000 --features 20000 --density 0.1 --groups 30 --out /tmp/q.zip
    wideviews upload /tmp/q.zip --dataset bench-q --wait
    python benchmarks/query/bench_query.py --dataset bench-q [--clients 1,5,10] [--seconds 8]

The load generator runs in another process (one thread and one keep-alive connection per client),
so its Python does not share the server's GIL; the stack's query server (uvicorn) answers. For each
of 1, 5 and 10 concurrent clients it prints p50/p99 latency and requests per second of:

  (a) a dot plot: 50 random features x all groups of `cell_type`, stats mean and frac_expressing
  (b) one random feature's values over all cells (JSON, and Arrow)
  (c) a prefix search (`GENE123` -> 10 features)
  (d) the embedding of all cells as Arrow (`/cells?include=embedding`, one page)

and, in the same run, the bare HBase reads of (a) and (b) through the same Thrift server
(happybase: the multi-get of the 50 stats rows, the multi-get of the feature's part rows), so the
service's own overhead is the ratio of the two. Every request of a scenario draws its features at
random from the whole dataset (a fixed seed), as a user's clicks would. Before any measurement every
feature's dot-plot row is read once through the API (HBase's block cache, which the bare multi-get
uses as well, and the server's stats cache then hold them all, as in a server that has been
answering for a while; run the server with WIDEVIEWS_QUERY_STATS_CACHE_BYTES=0 to measure without
its cache). Each measurement follows a warm-up of the same requests (up to 3 s) and is cut into
`--slices` alternating slices, service then bare, so that both see the same load of this shared
machine; the load average and the server's CPU per request (its processes' user + system time) are
printed beside each figure. The first embedding request of a version (cold: the cells view's
embedding blocks) is timed once, separately, before anything else, and then a per-cell scan of the
same columns (one cell short of all, which the blocks do not answer: what older versions read).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared import layout  # noqa: E402
from shared.adapters.hbase import view_table  # noqa: E402
from shared.config import Settings  # noqa: E402

ARROW = "application/vnd.apache.arrow.stream"


def _scenario_requests(name: str, dataset: str, features: list[str], rng: random.Random, n: int) -> list[tuple[str, dict[str, str]]]:
    """`n` (path, headers) pairs of one HTTP scenario."""
    out = []
    for _ in range(n):
        if name == "a_dotplot":
            picked = rng.sample(features, 50)
            query = urlencode([("grouping", "cell_type"), *[("feature", f) for f in picked], ("stats", "mean,frac_expressing")])
            out.append((f"/v1/datasets/{dataset}/aggregates?{query}", {}))
        elif name == "b_values_json":
            out.append((f"/v1/datasets/{dataset}/features/{quote(rng.choice(features), safe='')}/values", {}))
        elif name == "b_values_arrow":
            out.append((f"/v1/datasets/{dataset}/features/{quote(rng.choice(features), safe='')}/values", {"Accept": ARROW}))
        elif name == "c_prefix":
            prefix = rng.choice(features)[:-1].lower()
            out.append((f"/v1/datasets/{dataset}/features?prefix={quote(prefix)}&limit=20", {}))
        elif name == "d_embedding_arrow":
            out.append((f"/v1/datasets/{dataset}/cells?include=embedding&limit=100000", {"Accept": ARROW}))
        else:
            raise ValueError(name)
    return out


def _http_client(host: str, port: int, requests: list[tuple[str, dict[str, str]]], stop_at: float, out: list[float], errors: list[str], once: bool = False) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    i = 0
    while time.perf_counter() < stop_at and not (once and i >= len(requests)):
        path, headers = requests[i % len(requests)]
        i += 1
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            errors.append(f"{response.status} {body[:200]!r}")
            continue
        out.append(elapsed)
    conn.close()


def _thrift_client(settings: dict[str, Any], scenario: str, table: str, keys: list[list[bytes]], columns: list[bytes] | None, stop_at: float, out: list[float], errors: list[str]) -> None:
    import happybase

    conn = happybase.Connection(settings["hbase_thrift_host"], settings["hbase_thrift_port"], timeout=60_000)
    t = conn.table(table)
    i = 0
    while time.perf_counter() < stop_at:
        batch = keys[i % len(keys)]
        i += 1
        started = time.perf_counter()
        rows = t.rows(batch, columns=columns)
        if scenario == "a_dotplot":
            for _, data in rows:
                for value in data.values():
                    layout.decode_stats_vector(value)
        else:
            for _, data in rows:
                layout.decode_feature_part(data[b"f:v"])
        elapsed = time.perf_counter() - started
        if not rows:
            errors.append("no rows")
            continue
        out.append(elapsed)
    conn.close()


def _server_pid(settings: Settings) -> int | None:
    """The pid of the stack's query server (uvicorn's supervisor when it runs several workers)."""
    try:
        return int((settings.home / "run" / "query.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _process_tree_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of `pid` and its children (the uvicorn workers), from /proc."""
    if pid is None:
        return float("nan")
    pids = {pid}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) in pids:
                pids.add(int(entry))
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields_after = fields[fields.rindex(")") + 2 :].split()
        total += int(fields_after[11]) + int(fields_after[12])
    return total / os.sysconf("SC_CLK_TCK")


def load(job: dict[str, Any]) -> dict[str, Any]:
    """In the load-generator process: `clients` threads for `seconds`; latencies and errors back."""
    latencies: list[list[float]] = [[] for _ in range(job["clients"])]
    errors: list[str] = []
    stop_at = time.perf_counter() + job["seconds"]
    threads = []
    for c in range(job["clients"]):
        if job["kind"] == "http":
            target: Callable[..., None] = _http_client
            args: tuple[Any, ...] = (job["host"], job["port"], job["requests"][c], stop_at, latencies[c], errors, job.get("once", False))
        else:
            target = _thrift_client
            args = (job["settings"], job["scenario"], job["table"], job["keys"][c], job["columns"], stop_at, latencies[c], errors)
        threads.append(threading.Thread(target=target, args=args))
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    flat = sorted(x for per in latencies for x in per)
    return {"n": len(flat), "wall_s": wall, "latencies": flat, "errors": errors[:5], "n_errors": len(errors)}


def _summary(result: dict[str, Any]) -> dict[str, float]:
    lat = result["latencies"]
    if not lat:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "rps": 0.0, "n": 0}
    return {
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))],
        "rps": len(lat) / result["wall_s"],
        "n": len(lat),
    }


def _timed_get(conn: http.client.HTTPConnection, path: str, accept: str) -> tuple[float, int, int]:
    """One GET read to its end: seconds, body bytes, status."""
    started = time.perf_counter()
    conn.request("GET", path, headers={"Accept": accept})
    response = conn.getresponse()
    size = len(response.read())
    return time.perf_counter() - started, size, response.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--home", help="WIDEVIEWS_HOME of the running stack (default: the environment's)")
    parser.add_argument("--clients", default="1,5,10")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per scenario and path")
    parser.add_argument("--slices", type=int, default=4, help="alternating slices the seconds are cut into (service, bare, service, ...)")
    parser.add_argument("--scenarios", default="a_dotplot,b_values_json,b_values_arrow,c_prefix,d_embedding_arrow")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    settings = Settings.load(**({"home": Path(args.home)} if args.home else {}))
    host, port = settings.query_host, settings.query_port
    server_pid = _server_pid(settings)
    conn = http.client.HTTPConnection(host, port, timeout=60)
    cold_embedding: dict[str, float] = {}
    if "d_embedding_arrow" in args.scenarios.split(","):
        # The first request of a version reads every cell from HBase; later ones hit the server's page cache.
        cold_embedding["cold_s"], size, status = _timed_get(conn, f"/v1/datasets/{args.dataset}/cells?include=embedding&limit=100000", ARROW)
        print(f"first embedding request of the version (cold: the cells view's embedding blocks): {cold_embedding['cold_s']:.2f} s, {size / 1e6:.1f} MB, status {status}")
        # The same columns one cell short of all: a page the blocks do not answer, so a scan of one row
        # per cell (what versions computed without the blocks read). After the blocks' read, so that
        # read was cold; HBase's block cache holds the table's first blocks for this one.
        conn.request("GET", f"/v1/datasets/{args.dataset}")
        n_cells = json.loads(conn.getresponse().read())["n_cells"]
        cold_embedding["cold_scan_s"], size, status = _timed_get(conn, f"/v1/datasets/{args.dataset}/cells?include=embedding&limit={n_cells - 1}", ARROW)
        print(f"the per-cell scan of {n_cells - 1:,} cells (cold for the server, before the blocks): {cold_embedding['cold_scan_s']:.2f} s, {size / 1e6:.1f} MB, status {status}")
    conn.request("GET", f"/v1/datasets/{args.dataset}")
    info = json.loads(conn.getresponse().read())
    version = info["version"]
    features: list[str] = []
    cursor = None
    while True:
        conn.request("GET", f"/v1/datasets/{args.dataset}/features?limit=10000" + (f"&cursor={cursor}" if cursor else ""))
        page = json.loads(conn.getresponse().read())
        features += page["features"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    groups = len(info["groupings"]["cell_type"])
    print(
        f"dataset {args.dataset} version {version}: {info['n_cells']:,} cells x {info['n_features']:,} features, "
        f"{groups} cell types; query server http://{host}:{port}; {args.seconds:g} s per measurement, load generator in another process"
    )
    stats_table = view_table(settings, args.dataset, version, "stats_cell_type")
    features_table = view_table(settings, args.dataset, version, "features")
    settings_dict = {"hbase_thrift_host": settings.hbase_thrift_host, "hbase_thrift_port": settings.hbase_thrift_port}
    scenarios = args.scenarios.split(",")
    results: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        if "a_dotplot" in scenarios:
            # Every feature's stats row read once through the API before any measurement: HBase's block
            # cache (which the bare multi-get uses too) and the server's stats cache then hold them all,
            # as in a server that has been answering for a while. Random draws alone would leave the
            # first runs measuring a cache being filled.
            shuffled = random.Random("prime").sample(features, len(features))
            batches = [shuffled[i : i + 50] for i in range(0, len(shuffled), 50)]
            prime = [
                (f"/v1/datasets/{args.dataset}/aggregates?" + urlencode([("grouping", "cell_type"), *[("feature", f) for f in b], ("stats", "mean,frac_expressing")]), {})
                for b in batches
            ]
            started = time.perf_counter()
            primed = pool.apply(load, ({"kind": "http", "host": host, "port": port, "clients": 4, "seconds": 600.0, "requests": [prime[c::4] for c in range(4)], "once": True},))
            print(f"primed: every feature's dot plot row read once ({primed['n']} requests, {time.perf_counter() - started:.1f} s)")
        for clients in [int(c) for c in args.clients.split(",")]:
            for scenario in scenarios:
                rng = random.Random(f"{scenario}-{clients}")
                jobs = [("service", {"kind": "http", "host": host, "port": port, "clients": clients, "seconds": args.seconds,
                                     "requests": [_scenario_requests(scenario, args.dataset, features, rng, 400) for _ in range(clients)]})]
                if scenario in ("a_dotplot", "b_values_json"):
                    rng = random.Random(f"{scenario}-{clients}")
                    if scenario == "a_dotplot":
                        keys = [[[f.encode() for f in rng.sample(features, 50)] for _ in range(400)] for _ in range(clients)]
                        table, columns = stats_table, [b"s:mean", b"s:frac_expressing"]
                    else:
                        keys = [[[layout.feature_part_row(f, 0), layout.feature_part_row(f, 1)] for f in (rng.choice(features) for _ in range(400))] for _ in range(clients)]
                        table, columns = features_table, [b"f:v"]
                    jobs.append(("bare thrift", {"kind": "thrift", "settings": settings_dict, "scenario": scenario, "table": table, "keys": keys,
                                                 "columns": columns, "clients": clients, "seconds": args.seconds}))
                # Warm up first (HBase's block cache, the server's per-version caches, connections), then
                # measure in alternating slices, service then bare, so that both paths see the same
                # machine (it is shared: its load changes within seconds).
                for _, job in jobs:
                    pool.apply(load, ({**job, "seconds": min(3.0, args.seconds)},))
                merged: dict[str, dict[str, Any]] = {label: {"latencies": [], "wall_s": 0.0, "errors": [], "n_errors": 0, "cpu_s": 0.0, "loads": []} for label, _ in jobs}
                for _ in range(args.slices):
                    for label, job in jobs:
                        cpu_before = _process_tree_cpu_s(server_pid) if label == "service" else 0.0
                        part = pool.apply(load, ({**job, "seconds": args.seconds / args.slices},))
                        into = merged[label]
                        into["cpu_s"] += _process_tree_cpu_s(server_pid) - cpu_before if label == "service" else 0.0
                        into["latencies"] += part["latencies"]
                        into["wall_s"] += part["wall_s"]
                        into["errors"] += part["errors"]
                        into["n_errors"] += part["n_errors"]
                        into["loads"].append(os.getloadavg()[0])
                for label, _ in jobs:
                    result = merged[label]
                    result["latencies"].sort()
                    summary = _summary(result)
                    if label == "service" and summary["n"]:
                        summary["server_cpu_ms"] = 1000 * result["cpu_s"] / summary["n"]
                    load_avg = statistics.mean(result["loads"])
                    row = {"clients": clients, "scenario": scenario, "path": label, **summary, "errors": result["n_errors"], "load": load_avg}
                    results.append(row)
                    note = f"  errors {result['n_errors']}: {result['errors'][:2]}" if result["n_errors"] else ""
                    cpu = f"  server CPU {summary['server_cpu_ms']:5.2f} ms/req" if "server_cpu_ms" in summary else " " * 29
                    print(
                        f"{clients:>3} clients  {scenario:<18} {label:<12} p50 {summary['p50_ms']:8.2f} ms  p99 {summary['p99_ms']:8.2f} ms"
                        f"  {summary['rps']:8.1f} req/s{cpu}  load {load_avg:5.1f}  (n={summary['n']}){note}",
                        flush=True,
                    )
    print("\nservice overhead (service p50 / bare Thrift p50):")
    for clients in sorted({r["clients"] for r in results}):
        for scenario in ("a_dotplot", "b_values_json"):
            pair = {r["path"]: r for r in results if r["clients"] == clients and r["scenario"] == scenario}
            if len(pair) == 2:
                print(f"{clients:>3} clients  {scenario:<18} {pair['service']['p50_ms'] / pair['bare thrift']['p50_ms']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": args.dataset, "version": version, "embedding": cold_embedding, "results": results}, indent=1))


if __name__ == "__main__":
    main()
