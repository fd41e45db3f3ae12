"""The explorer page on large datasets, in headless chromium (Debian's, as the browser tests): whether the
page freezes (the longest main-thread task, from the browser's Long Tasks API, and the largest lag of
a 20 ms timer in the page) and how long things take.

Two parts, each optional:

- the dot plot (`--dot-dataset`): 50 genes x 100 groups, opened and re-ordered three times; the
  longest task overlapping the page's own timings of the group ordering and the drawing;
- the embedding (`--dataset`, e.g. 1,000,000 cells): the page as it opens (the density-aware sample
  above 250,000 cells), a gene's colouring of the sample, then "every cell" (paged in the background,
  the sample staying drawn until every page is in) and the gene's colouring of every cell. The floor
  in the same run: wideviews.client reading the same Arrow pages (the sample, every cell, the gene's
  values) in Python, so the page's cost over the API's own is a ratio on this shared machine.

    python benchmarks/explorer/bench_explorer.py --url http://127.0.0.1:PORT --dataset million --dot-dataset dot50x100

Prints one table and writes the figures as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

from wideviews.client import Client

MONITOR = """
window.wvBench = {longTasks: [], lag: {}, phase: 'load'};
new PerformanceObserver((list) => list.getEntries().forEach((e) => {
  window.wvBench.longTasks.push([window.wvBench.phase, Math.round(e.startTime), Math.round(e.duration)]);
})).observe({type: 'longtask', buffered: true});
let last = performance.now();
setInterval(() => {
  const now = performance.now();
  const p = window.wvBench.phase;
  window.wvBench.lag[p] = Math.max(window.wvBench.lag[p] || 0, now - last - 20);
  last = now;
}, 20);
"""
IDLE = "return !!window.wvExplorer && window.wvExplorer.pending === 0"


def browser(width: int, height: int) -> Any:
    """Headless Debian chromium through its chromedriver (nothing downloaded), as the browser tests run it."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": MONITOR})
    return driver


def wait(driver: Any, script: str, timeout_s: float) -> float:
    """Poll a JavaScript condition until true; the seconds it took."""
    started = time.monotonic()
    while not driver.execute_script(script):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{script} after {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - started


def settle(driver: Any, script: str, timeout_s: float) -> float:
    """`wait` for the condition and the page idle, twice a moment apart (one step may start the next)."""
    took = wait(driver, f"return ({script}) && window.wvExplorer.pending === 0", timeout_s)
    time.sleep(0.3)
    return took + wait(driver, f"return ({script}) && window.wvExplorer.pending === 0", timeout_s)


def phase(driver: Any, name: str) -> None:
    """Attribute the long tasks and timer lags from now on to `name`."""
    driver.execute_script(f"window.wvBench.phase = {json.dumps(name)}")


def phase_figures(driver: Any, name: str) -> dict[str, float]:
    """The longest task, the total of long tasks and the largest timer lag of one phase, in ms."""
    bench = driver.execute_script("return window.wvBench")
    tasks = [d for p, _, d in bench["longTasks"] if p == name]
    return {"longest_task_ms": max(tasks, default=0), "long_tasks": len(tasks), "long_tasks_ms_total": sum(tasks), "max_timer_lag_ms": round(bench["lag"].get(name, 0))}


def page_url(url: str, params: dict[str, Any]) -> str:
    return f"{url}/?{urllib.parse.urlencode(params, doseq=True)}"


def run_dot_plot(url: str, dataset: str, grouping: str, n_genes: int, screenshot: Path | None) -> dict[str, Any]:
    """Open the page on `n_genes` genes x the grouping's groups, re-order three times; the drawing's long tasks."""
    client = Client(url)
    genes = client.features(dataset, limit=n_genes)
    groups = len(client.dataset(dataset)["groupings"][grouping])
    driver = browser(1280, 800)
    try:
        started = time.monotonic()
        driver.get(page_url(url, {"dataset": dataset, "grouping": grouping, "g": genes, "order": "cluster"}))
        wait(driver, "return !!window.wvExplorer && !!window.wvExplorer.plotted && window.wvExplorer.plotted.kind === 'dot'", 600)
        plotted_s = time.monotonic() - started
        settle(driver, "true", 600)
        for order in ("size", "server", "cluster"):
            driver.execute_script(f"const s = document.getElementById('order'); s.value = '{order}'; s.dispatchEvent(new Event('change'));")
            settle(driver, f"window.wvExplorer.state.order === '{order}'", 600)
        if screenshot:
            driver.save_screenshot(str(screenshot))
        timings = driver.execute_script("return window.wvExplorer.timings")
        tasks = driver.execute_script("return window.wvBench.longTasks")
    finally:
        driver.quit()
    windows = [(start, start + took) for what, start, took in timings if what in ("order", "plot dot")]
    drawing = [took for _, start, took in tasks if any(start < end and start + took > begin for begin, end in windows)]
    return {
        "dataset": dataset,
        "genes": len(genes),
        "groups": groups,
        "dot_plot_s": round(plotted_s, 2),
        "draws_ms": [took for what, _, took in timings if what == "plot dot"],
        "orders_ms": [took for what, _, took in timings if what == "order"],
        "longest_task_while_drawing_ms": max(drawing, default=0),
        "longest_task_of_the_page_ms": max((took for _, _, took in tasks), default=0),
        "script_evaluated_ms": next(took for what, _, took in timings if what == "script evaluated"),
        "load_average": os.getloadavg(),
        "page_timings": timings,
    }


def run_embedding(url: str, dataset: str, grouping: str, skip_all_floor: bool, screenshot: Path | None) -> dict[str, Any]:
    """The embedding as the page opens it (the sample above the threshold), coloured by a gene, then every cell."""
    client = Client(url)
    described = client.dataset(dataset)
    n_cells = described["n_cells"]
    gene = client.features(dataset, limit=2)[-1]
    floor: dict[str, float] = {}
    started = time.monotonic()
    sample = client.embedding(dataset, sample=True)
    floor["client_sample_s"] = round(time.monotonic() - started, 2)
    started = time.monotonic()
    client.values(dataset, gene)
    floor["client_values_s"] = round(time.monotonic() - started, 2)
    if not skip_all_floor:
        started = time.monotonic()
        client.cells(dataset, include=("metadata", "embedding"))
        floor["client_every_cell_s"] = round(time.monotonic() - started, 2)

    out: dict[str, Any] = {"dataset": dataset, "n_cells": n_cells, "n_sampled": len(sample), "gene": gene, "floor": floor}
    driver = browser(1280, 800)
    try:
        started = time.monotonic()
        driver.get(page_url(url, {"dataset": dataset, "grouping": grouping, "g": [gene]}))
        settle(driver, "window.wvExplorer.embedding && window.wvExplorer.embedding.kind === 'grouping'", 1800)
        drawn = driver.execute_script("const e = window.wvExplorer.embedding; return {n: e.n, sample: e.sample}")
        out["open"] = {"embedding_drawn_s": round(time.monotonic() - started, 2), **drawn, **phase_figures(driver, "load")}

        phase(driver, "colour sample")
        started = time.monotonic()
        driver.execute_script("document.querySelector('#chips button.gene').click()")
        settle(driver, f"window.wvExplorer.embedding && window.wvExplorer.embedding.gene === {json.dumps(gene)}", 600)
        out["colour_sample"] = {"s": round(time.monotonic() - started, 2), **phase_figures(driver, "colour sample")}

        phase(driver, "every cell")
        started = time.monotonic()
        driver.execute_script("const s = document.getElementById('points'); s.value = 'all'; s.dispatchEvent(new Event('change'));")
        settle(driver, f"window.wvExplorer.embedding && window.wvExplorer.embedding.n === {n_cells} && window.wvExplorer.embedding.gene === {json.dumps(gene)}", 3600)
        timings = driver.execute_script("return window.wvExplorer.timings")
        every = phase_figures(driver, "every cell")
        out["every_cell"] = {
            "s": round(time.monotonic() - started, 2),
            "cells_paged_s": round(next(took for what, _, took in reversed(timings) if what == "cells") / 1000, 2),
            "colour_by_gene_s": round(next(took for what, _, took in reversed(timings) if what == "colour by gene") / 1000, 2),
            **every,
        }
        if screenshot:
            driver.execute_script("document.getElementById('embedding-panel').scrollIntoView()")
            driver.save_screenshot(str(screenshot))
        out["page_timings"] = timings
        out["long_tasks"] = driver.execute_script("return window.wvBench.longTasks")
    finally:
        driver.quit()
    if "client_every_cell_s" in floor:
        out["ratio_every_cell_vs_client"] = round(out["every_cell"]["s"] / floor["client_every_cell_s"], 2)
    out["load_average"] = os.getloadavg()
    return out


def main() -> None:
    """Run the parts asked for, print a table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--dataset", help="the large dataset for the embedding (e.g. 1,000,000 cells)")
    parser.add_argument("--grouping", default="cell_type")
    parser.add_argument("--dot-dataset", help="the dataset for the dot plot")
    parser.add_argument("--dot-grouping", default="cluster")
    parser.add_argument("--genes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-every-cell-floor", action="store_true", help="do not time the client reading every cell")
    parser.add_argument("--out", type=Path, default=Path("build/bench-explorer.json"))
    parser.add_argument("--screenshots", type=Path, default=None, help="a directory for the last round's screenshots")
    args = parser.parse_args()
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    shot = lambda name: args.screenshots / name if args.screenshots else None  # noqa: E731
    results: dict[str, list[dict[str, Any]]] = {"dot_plot": [], "embedding": []}
    for _ in range(args.rounds):
        if args.dot_dataset:
            results["dot_plot"].append(run_dot_plot(args.url, args.dot_dataset, args.dot_grouping, args.genes, shot("dot-plot.png")))
        if args.dataset:
            results["embedding"].append(run_embedding(args.url, args.dataset, args.grouping, args.skip_every_cell_floor, shot("embedding.png")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    for r in results["dot_plot"]:
        print(
            f"dot plot {r['genes']} x {r['groups']}: shown {r['dot_plot_s']} s after navigation; draws {r['draws_ms']} ms, orderings {r['orders_ms']} ms; "
            f"longest task while ordering or drawing {r['longest_task_while_drawing_ms']} ms; longest of the page {r['longest_task_of_the_page_ms']} ms "
            f"(script evaluated in {r['script_evaluated_ms']} ms); load {r['load_average'][0]:.1f}"
        )
    for r in results["embedding"]:
        o, c, e, f = r["open"], r["colour_sample"], r["every_cell"], r["floor"]
        print(
            f"embedding {r['n_cells']:,} cells: opened with {o['n']:,} points (sample {o['sample']}) drawn in {o['embedding_drawn_s']} s, longest task {o['longest_task_ms']} ms, max lag {o['max_timer_lag_ms']} ms; "
            f"colour the sample {c['s']} s (longest {c['longest_task_ms']} ms); every cell {e['s']} s (pages {e['cells_paged_s']} s, colour {e['colour_by_gene_s']} s; "
            f"longest task {e['longest_task_ms']} ms, {e['long_tasks']} long tasks, max lag {e['max_timer_lag_ms']} ms); floor: client {f}; load {r['load_average'][0]:.1f}"
        )


if __name__ == "__main__":
    main()
