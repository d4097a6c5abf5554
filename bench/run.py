"""prodline's benchmarks: ``python bench/run.py [--only NAME[,NAME]] [--quick] [--no-save] [--live]`` (``make bench``).

* ``engine``: no-op releases against plain Temporal workflows (throughput, latency, ratios);
* ``scale``: 1,000 releases of 200 services at once on one worker process (latency, peak memory);
* ``cli``: ``prodline --help`` and ``prodline release start`` against ``temporal workflow start``.

Each starts its own headless embedded Temporal dev server on a free port with a
temporary state dir, and stops it. Every process measures one copy of
prodline's code taken at the start (see snapshot.py; ``--live`` uses the
working tree as it is). The report goes to stdout (progress to stderr);
bench/RESULTS.md and bench/results.json keep the figures and their history.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import snapshot

NAMES = ("engine", "scale", "cli")


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these benchmarks (repeatable or comma-separated): {', '.join(NAMES)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller N (a smoke test, about two minutes)")
    parser.add_argument("--no-save", action="store_true", help="print only; leave RESULTS.md and results.json alone")
    parser.add_argument("--live", action="store_true", help="measure the working tree as is, not a copy of it")
    parser.add_argument(
        "--fix",
        default="",
        metavar="NAME[,NAME]",
        help="bench workers try these changes to the resolve activity (bench/pathcost.py); needs --no-save",
    )
    args = parser.parse_args(argv)
    if args.fix and not args.no_save:
        parser.error("--fix measures a trial change, not prodline as it is: add --no-save")
    if args.fix:
        os.environ["PRODLINE_BENCH_FIX"] = args.fix
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return args, names


def main(args: argparse.Namespace, names: list[str], code_digest: str) -> int:
    # Imported only now: after the snapshot went first on sys.path.
    import clibench
    import engine
    import report
    import scale
    from common import Contention

    benchmarks = {"engine": engine.run, "scale": scale.run, "cli": clibench.run}
    began = time.perf_counter()
    current = {
        "date": report.now(),
        "mode": "quick" if args.quick else "full",
        "machine": report.machine(),
        "git": report.git() | {"code": code_digest},
        "benchmarks": {},
    }
    print(f"Machine: {report.machine_line(current['machine'])}", file=sys.stderr, flush=True)
    failed = []
    for name in names:
        print(f"== {name} ({current['mode']}) ==", file=sys.stderr, flush=True)
        try:
            with Contention() as contention:
                result = asyncio.run(benchmarks[name](quick=args.quick))
            result["contention"] = contention.figures
            current["benchmarks"][name] = result
            if contention.figures["other_cores"] > 0.25:
                print(
                    f"warning: other processes kept {contention.figures['other_cores']:.1f} cores busy during {name}; "
                    "its figures are noisier than usual",
                    file=sys.stderr,
                    flush=True,
                )
        except Exception as exc:
            failed.append(name)
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    current["seconds"] = time.perf_counter() - began

    print(report.console(current))
    if current["benchmarks"] and not args.no_save:
        report.save(current)
        print(f"wrote {report.RESULTS_MD} and {report.RESULTS_JSON} ({current['seconds']:.0f} s)")
    missed = [
        f"{name}.{key}"
        for name, result in current["benchmarks"].items()
        for key, target in result.get("targets", {}).items()
        if not target["met"]
    ]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    args, names = parse(None)
    copy = None
    if args.live:
        code = snapshot.digest()
    else:
        copy, code = snapshot.activate()
        print(f"bench: measuring a copy of prodline in {copy} (code {code})", file=sys.stderr, flush=True)
    try:
        status = main(args, names, code)
    finally:
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # like prodline's CLI: no interpreter teardown under the Rust runtime's threads
