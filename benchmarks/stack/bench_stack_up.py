"""Time `wideviews stack up` cold (fresh state directory) and warm (again after `down`, same
directory), and `wideviews stack down`, each as a user runs it (a CLI subprocess).

    .venv/bin/python benchmarks/stack/bench_stack_up.py [--rounds 2] [--infra-only]

Goals: cold up < 60 s, warm up < 30 s. Prints a table; writes benchmarks/results/stack_up.json.
Each round uses a new state directory under a temporary folder, removed at the end; ports are free
ones, so it runs beside any other stack.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GOALS_S = {"up cold": 60.0, "up warm": 30.0}


def run_cli(home: Path, *args: str) -> float:
    """Run `wideviews --home HOME stack ARGS...`; return its wall time in seconds (raises on failure)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "--home", str(home), "stack", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "WIDEVIEWS_HOME"},
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"stack {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="cold+warm rounds, each in a new state directory")
    parser.add_argument("--infra-only", action="store_true", help="moto + HBase + Thrift + resources, no services")
    args = parser.parse_args()
    up_args = ["up", "--infra-only"] if args.infra_only else ["up"]

    samples: dict[str, list[float]] = {"up cold": [], "down (after cold)": [], "up warm": [], "down (after warm)": []}
    with tempfile.TemporaryDirectory(prefix="wideviews-bench-") as tmp:
        for round_no in range(args.rounds):
            home = Path(tmp) / f"home{round_no}"
            try:
                samples["up cold"].append(run_cli(home, *up_args))
                samples["down (after cold)"].append(run_cli(home, "down"))
                samples["up warm"].append(run_cli(home, *up_args))
                samples["down (after warm)"].append(run_cli(home, "down"))
            finally:
                run_cli(home, "down")  # a no-op when already down; stops what a failure left running

    print(f"\nwideviews stack {'up --infra-only' if args.infra_only else 'up'}: {args.rounds} round(s), {os.cpu_count()} cores")
    print(f"{'step':<20}{'median s':>10}{'max s':>10}{'goal s':>10}  ok")
    rows = []
    for step, values in samples.items():
        goal = GOALS_S.get(step)
        median, worst = statistics.median(values), max(values)
        ok = "" if goal is None else ("yes" if worst < goal else "NO")
        print(f"{step:<20}{median:>10.1f}{worst:>10.1f}{(f'{goal:.0f}' if goal else '-'):>10}  {ok}")
        rows.append({"step": step, "seconds": values, "median_s": median, "max_s": worst, "goal_s": goal})
    out = PROJECT_ROOT / "benchmarks" / "results" / "stack_up.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"infra_only": args.infra_only, "rounds": args.rounds, "steps": rows}, indent=2) + "\n")
    return 0 if all(r["goal_s"] is None or r["max_s"] < r["goal_s"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
