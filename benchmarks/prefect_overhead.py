"""What Prefect costs a run: ``calsync demo`` (two syncs, each a Prefect flow) against
``calsync demo --no-prefect`` (the same stages as plain calls), interleaved, N times each.

    .venv/bin/python benchmarks/prefect_overhead.py [-n 3] [--base DIR]

``--base DIR`` adds the demo of another checkout of calsync (e.g. ``git archive <commit> | tar -x -C DIR``),
run with this virtual environment, to compare before and after. Prints each run's wall time with the load
average when it started, then the median of each variant and its ratio to the plain run: on the shared
2-core test machine absolute times move with the load, ratios much less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str | None]:
    """(wall seconds, None) or (wall seconds, the last line it printed) when the demo failed."""
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    if done.returncode != 0 or "OK:" not in done.stdout:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        return took, f"exit {done.returncode}: {last[:160]}"
    return took, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--base", type=Path, help="another calsync checkout to run the demo of, for comparison")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PYTHONPATH")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    python = sys.executable
    variants = {
        "prefect": ([python, "-m", "flows.cli", "demo"], ROOT, {"PREFECT_HOME": str(ROOT / "data" / "prefect")}),
        "no-prefect": ([python, "-m", "flows.cli", "demo", "--no-prefect"], ROOT, {}),
    }
    if args.base:
        base = args.base.resolve()
        variants["base prefect"] = ([python, "-m", "flows.cli", "demo"], base,
                                    {"PYTHONPATH": str(base), "PREFECT_HOME": str(base / "data" / "prefect")})
    times: dict[str, list[float]] = {name: [] for name in variants}
    failures: dict[str, int] = {name: 0 for name in variants}
    loads: list[float] = []
    for i in range(args.n):
        for name, (cmd, cwd, extra) in variants.items():
            load = os.getloadavg()[0]
            loads.append(load)
            took, failed = _run(cmd, cwd, {**env, **extra})
            if failed:
                failures[name] += 1
                print(f"run {i + 1} {name:<13} FAILED after {took:6.2f} s  (load average {load:.2f}): {failed}",
                      flush=True)
                continue
            times[name].append(took)
            print(f"run {i + 1} {name:<13} {took:6.2f} s  (load average {load:.2f})", flush=True)
    plain = statistics.median(times["no-prefect"]) if times["no-prefect"] else float("nan")
    print(f"\nload average over the runs: {min(loads):.2f}-{max(loads):.2f} (2 cores)")
    for name, ts in times.items():
        med = statistics.median(ts) if ts else float("nan")
        print(f"{name:<13} median {med:6.2f} s  = {med / plain:4.2f} x no-prefect"
              f"  ({len(ts)} ok, {failures[name]} failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
