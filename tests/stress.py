"""Run the fault tests again and again beside CPU hogs: how determinism is shown.

    make test-stress                 # 20 runs of the tests marked `fault`, one CPU hog
    .venv/bin/python -m tests.stress --runs 5 --hogs 2 -- -k rebalance

Each run is a fresh pytest process; a hog is a process spinning on a core for as long
as the runs last, so the workers under test get less CPU than they would alone (and
every wait of theirs is stretched) without changing what they are fed. One line per
run, then a summary; the output of a failed run is kept under var/stress/, and the
figures the tests print (where a kill landed, how long commits took to catch up) are
collected in var/stress/figures.txt. Exits 1 if any run failed. Not part of `make
test`: it takes `runs` times as long.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import subprocess
import sys
import time
from pathlib import Path

# The lines the fault tests print about what happened in a run.
FIGURE = re.compile(r"^(killed with|rebalance and kill|SIGTERM in an outage)")


def _spin() -> None:
    while True:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--hogs", type=int, default=1, help="CPU-spinning processes beside the tests")
    parser.add_argument("--marker", default="fault", help="pytest marker expression of the tests to repeat")
    parser.add_argument("--logs", type=Path, default=Path("var/stress"))
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    figures = args.logs / "figures.txt"
    figures.write_text("")

    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    failed, walls = [], []
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            # -rP: the passed tests' printed figures come with the report.
            done = subprocess.run([sys.executable, "-m", "pytest", "-m", args.marker, "-q", "-rP", "-p",
                                   "no:cacheprovider", *args.pytest_args], capture_output=True, text=True)
            with figures.open("a") as out:
                out.writelines(f"run {run}: {line}\n" for line in done.stdout.splitlines() if FIGURE.match(line))
            wall = time.monotonic() - started
            walls.append(wall)
            summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
            if done.returncode != 0:
                log = args.logs / f"run-{run:03d}.log"
                log.write_text(done.stdout + done.stderr)
                failed.append(run)
                summary += f"  (output in {log})"
            print(f"run {run:>3}/{args.runs}: exit {done.returncode}, {wall:6.1f} s: {summary}", flush=True)
    finally:
        for hog in hogs:
            hog.terminate()
    print(f"{args.runs - len(failed)} of {args.runs} runs passed beside {args.hogs} CPU hog(s); wall time per run "
          f"{min(walls):.0f} to {max(walls):.0f} s" + (f"; failed: runs {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
