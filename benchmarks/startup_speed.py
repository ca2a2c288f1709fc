"""How fast edgeprune starts: ``import edgeprune``, ``edgeprune --help`` and ``edgeprune targets``.

Each figure is the median wall time of ``--runs`` fresh interpreter subprocesses (after one
unmeasured warm-up run that fills the OS file cache and the ``__pycache__`` folders), run from
the repository root with ``python -m edgeprune``; the goals are issue #22's.
Where a goal is missed, ``python -X importtime -c "import edgeprune.cli"`` shows what is imported eagerly.

Run: .venv/bin/python benchmarks/startup_speed.py [--runs 7] [--out PATH]
Writes benchmarks/results/startup-speed.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (name, argv after the interpreter, goal in seconds)
CASES = (
    ("import edgeprune", ["-c", "import edgeprune"], 0.3),
    ("edgeprune --help", ["-m", "edgeprune", "--help"], 0.5),
    ("edgeprune targets", ["-m", "edgeprune", "targets"], 2.0),
)


def time_case(argv: list[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` fresh ``python ARGV`` processes (after one warm-up), failing loudly on an error."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = []
    for i in range(runs + 1):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()[-500:]}")
        if i:
            out.append(wall)
    return out


def main(runs: int = 7, out: str | None = None) -> dict:
    """Measure, print pass/fail per goal, write the JSON; returns it."""
    from edgeprune.environment import machine_info, versions
    from edgeprune.fileio import write_json

    if runs < 5:
        raise SystemExit("--runs must be >= 5")
    rows = []
    for name, argv, goal in CASES:
        walls = time_case(argv, runs)
        med = statistics.median(walls)
        rows.append({"case": name, "median_s": round(med, 4), "min_s": round(min(walls), 4), "max_s": round(max(walls), 4),
                     "runs": len(walls), "goal_s": goal, "pass": med <= goal})
        print(f"{name:<20} median {med:6.3f} s (min {min(walls):.3f}, max {max(walls):.3f}, {len(walls)} runs)  "
              f"goal <= {goal} s: {'PASS' if med <= goal else 'FAIL'}")
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    doc = {
        "benchmark": "startup-speed",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "loadavg_start": load,
        "versions": versions(),
        "protocol": f"median of {runs} fresh `{Path(sys.executable).name} ...` subprocesses from the repository root, "
                    "after one unmeasured warm-up run",
        "results": rows,
        "all_pass": all(r["pass"] for r in rows),
    }
    path = Path(out) if out else ROOT / "benchmarks" / "results" / "startup-speed.json"
    write_json(path, doc)
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="measured runs per case (>= 5)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/startup-speed.json)")
    a = ap.parse_args()
    main(a.runs, a.out)
