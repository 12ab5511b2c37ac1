"""How long each notebook's code runs, in fast mode (CI's ``DDPM_LITE_FAST=1``) and full mode (what learners get).

    python bench/notebook_times.py                       # every notebook, both modes (about 20 min on 2 idle cores)
    python bench/notebook_times.py 01 05 --modes fast    # some notebooks, one mode
    python bench/notebook_times.py --learner             # the learner versions (every exercise blank) instead

Each notebook runs top to bottom in its own kernel (``jupyter nbconvert --execute``, kernel start and imports
included; the executed copy goes to a temporary folder, the notebook itself is not touched). Two clocks per run:

* **wall** seconds, what a learner waits; on a shared machine it grows with the load (the load average is recorded
  before and after each run);
* **CPU** seconds of the kernel and nbconvert (``getrusage`` of the finished child processes): the work itself,
  which a busy neighbour slows much less. On two idle cores with one thread (``OMP_NUM_THREADS=1``, as here),
  wall is about CPU plus the waits (kernel start, widgets, sleeping).

A run that fails (an exception in a cell) is reported with its error line and the script exits 1 at the end: with
``--learner`` that is the check that the learner versions run top to bottom with every exercise blank.
Results: a markdown table on stdout and JSON in ``--out`` (default ``build/notebook-times.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe  # bench/machine.py

ROOT = Path(__file__).resolve().parent.parent
MODES = ("fast", "full")


def notebooks(names: list[str], learner: bool) -> list[Path]:
    folder = ROOT / "notebooks" / ("exercises" if learner else "")
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if names:
        found = [p for p in found if any(p.name.startswith(n) for n in names)]
    if not found:
        raise SystemExit(f"no notebook matches {names} in {folder}")
    return found


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(path: Path, mode: str, timeout: int) -> dict:
    """Execute ``path`` in ``mode``; wall and CPU seconds, load averages, and the error line if it failed."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
    env.pop("DDPM_LITE_FAST", None)
    if mode == "fast":
        env["DDPM_LITE_FAST"] = "1"
    load_before = os.getloadavg()[0]
    cpu0, wall0 = children_cpu(), time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", str(path),
             "--output-dir", out, f"--ExecutePreprocessor.timeout={timeout}"],
            cwd=path.parent, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall0, children_cpu() - cpu0
    result = {"notebook": path.stem, "mode": mode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
              "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1),
              "ok": proc.returncode == 0}
    if proc.returncode:
        lines = [line for line in proc.stderr.splitlines() if "Error" in line or "error" in line]
        result["error"] = (lines[-1] if lines else proc.stderr.strip().splitlines()[-1:] or ["?"])[-1][:300]
    return result


def table(results: list[dict], modes) -> list[str]:
    by = {(r["notebook"], r["mode"]): r for r in results}
    names = sorted({r["notebook"] for r in results})
    head = "| notebook | " + " | ".join(f"{m}: wall (CPU) s" for m in modes) + " |"
    lines = [head, "|---|" + "---|" * len(modes)]
    for name in names:
        cells = []
        for m in modes:
            r = by.get((name, m))
            cells.append("-" if r is None else
                         f"{r['wall_s']:.0f} ({r['cpu_s']:.0f})" + ("" if r["ok"] else " FAILED"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook number prefixes (default: all), e.g. 01 07")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--learner", action="store_true", help="time the learner versions (notebooks/exercises/)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell before a run counts as hung")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "notebook-times.json")
    args = parser.parse_args(argv)
    machine = describe()
    print(machine, flush=True)
    results = []
    for path in notebooks(args.names, args.learner):
        for mode in args.modes:
            r = run_one(path, mode, args.timeout)
            results.append(r)
            print(f"{r['notebook']:40s} {mode:4s} wall {r['wall_s']:6.1f} s  CPU {r['cpu_s']:6.1f} s  load "
                  f"{r['load_before']:.1f} -> {r['load_after']:.1f}" + ("" if r["ok"] else f"  FAILED: {r['error']}"),
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "learner": args.learner, "results": results}, indent=1))
    print("\n".join(["", *table(results, args.modes)]))
    failed = [f"{r['notebook']} ({r['mode']})" for r in results if not r["ok"]]
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
