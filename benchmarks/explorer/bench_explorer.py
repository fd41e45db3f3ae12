"""The explorer page on a large dataset, in headless chromium (Debian's, as the browser tests): how long
until the dot plot and the embedding are drawn, how long a gene's colouring takes, and whether the
page freezes meanwhile (the longest main-thread task, from the browser's Long Tasks API, and the
largest lag of a 20 ms timer in the page). The floor in the same run: wideviews.client reading the
same Arrow pages (cells, then the gene's values) in Python, so the page's cost over the API's own is
a ratio on this shared machine.

    python benchmarks/explorer/bench_explorer.py --url http://127.0.0.1:PORT --dataset million

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
window.wvBench = {longTasks: [], maxLagMs: 0, phase: 'load', byPhase: {}};
new PerformanceObserver((list) => list.getEntries().forEach((e) => {
  window.wvBench.longTasks.push([window.wvBench.phase, Math.round(e.startTime), Math.round(e.duration)]);
})).observe({type: 'longtask', buffered: true});
let last = performance.now();
setInterval(() => {
  const now = performance.now();
  const lag = now - last - 20;
  const p = window.wvBench.phase;
  window.wvBench.byPhase[p] = Math.max(window.wvBench.byPhase[p] || 0, lag);
  last = now;
}, 20);
"""


def browser(width: int, height: int) -> Any:
    """Headless Debian chromium through its chromedriver (nothing downloaded)."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(driver: Any, script: str, timeout_s: float) -> float:
    started = time.monotonic()
    while not driver.execute_script(script):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{script} after {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - started


def phase_figures(driver: Any, phase: str) -> dict[str, float]:
    bench = driver.execute_script("return window.wvBench")
    tasks = [d for p, _, d in bench["longTasks"] if p == phase]
    return {"longest_task_ms": max(tasks, default=0), "long_tasks_ms_total": sum(tasks), "max_timer_lag_ms": round(bench["byPhase"].get(phase, 0))}


def run(url: str, dataset: str, grouping: str, n_genes: int, screenshot: Path | None) -> dict[str, Any]:
    client = Client(url)
    described = client.dataset(dataset)
    genes = client.features(dataset, limit=n_genes)
    colour_gene = genes[1] if len(genes) > 1 else genes[0]
    # The floor: the same pages read by Python.
    started = time.monotonic()
    cells = client.cells(dataset, include=("metadata", "embedding"))
    floor_cells_s = time.monotonic() - started
    started = time.monotonic()
    client.values(dataset, colour_gene)
    floor_values_s = time.monotonic() - started

    driver = browser(1280, 800)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": MONITOR})
        query = urllib.parse.urlencode({"dataset": dataset, "grouping": grouping, "g": genes, "order": "cluster"}, doseq=True)
        started = time.monotonic()
        driver.get(f"{url}/?{query}")
        plot_s = wait(driver, "return !!window.wvExplorer && !!window.wvExplorer.plotted", 600) + 0.0
        plot_s = time.monotonic() - started
        wait(driver, "const e = window.wvExplorer.embedding; return e && e.kind === 'grouping' && window.wvExplorer.pending === 0", 1800)
        embedding_s = time.monotonic() - started
        load = phase_figures(driver, "load")
        driver.execute_script("window.wvBench.phase = 'colour'")
        chip = [c for c in driver.find_elements("css selector", "#chips button.gene") if c.text == colour_gene][0]
        started = time.monotonic()
        chip.click()
        wait(driver, f"const e = window.wvExplorer.embedding; return e && e.gene === {json.dumps(colour_gene)} && window.wvExplorer.pending === 0", 600)
        colour_s = time.monotonic() - started
        colour = phase_figures(driver, "colour")
        if screenshot:
            driver.save_screenshot(str(screenshot))
        timings = driver.execute_script("return window.wvExplorer.timings")
    finally:
        driver.quit()
    return {
        "dataset": dataset,
        "n_cells": described["n_cells"],
        "genes_in_plot": len(genes),
        "groups": len(described["groupings"][grouping]),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "page": {"dot_plot_s": round(plot_s, 2), "embedding_drawn_s": round(embedding_s, 2), "load": load, "colour_by_gene_s": round(colour_s, 2), "colour": colour},
        "floor": {"client_cells_s": round(floor_cells_s, 2), "client_values_s": round(floor_values_s, 2), "cells_rows": len(cells)},
        "ratios": {"embedding_vs_client": round(embedding_s / floor_cells_s, 2), "colour_vs_client": round(colour_s / max(floor_values_s, 1e-3), 2)},
        "page_timings": timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--grouping", default="cell_type")
    parser.add_argument("--genes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("build/bench-explorer.json"))
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    results = [run(args.url, args.dataset, args.grouping, args.genes, args.screenshot) for _ in range(args.rounds)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{'round':>5} {'cells':>9} {'plot s':>7} {'embedding s':>12} {'longest task ms':>16} {'max lag ms':>11} {'colour s':>9} {'longest ms':>11} {'client cells s':>15} {'client values s':>16} {'load avg':>9}")
    for i, r in enumerate(results):
        p, f = r["page"], r["floor"]
        print(
            f"{i:>5} {r['n_cells']:>9,} {p['dot_plot_s']:>7} {p['embedding_drawn_s']:>12} {p['load']['longest_task_ms']:>16} {p['load']['max_timer_lag_ms']:>11} "
            f"{p['colour_by_gene_s']:>9} {p['colour']['longest_task_ms']:>11} {f['client_cells_s']:>15} {f['client_values_s']:>16} {r['load_average'][0]:>9.1f}"
        )


if __name__ == "__main__":
    main()
