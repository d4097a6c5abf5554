"""What the release path of registered applications and bundles costs on a worker, part by part.

A release now resolves its plan on the control worker (``activities/resolve.py``: ask the
application workflow for its current revision, find the bundle in the worker's cache, parse
and validate the application and the service file, build the plan), and every step attempt
works in its own copy of the bundle (``activities/workspace.py``). This module times those
parts in two ways:

* ``python bench/pathcost.py [--n N]``: on an idle embedded server and an in-process
  worker, N calls of each part one after the other (the floor: no queueing);
* :func:`instrument`: ``bench/benchworker.py`` calls it when ``PRODLINE_BENCH_TIMINGS``
  names a file, so a benchmark's worker records every call's duration under load and
  writes them there when it stops (``python bench/pathcost.py --engine`` runs the engine
  benchmark's prodline batch that way and prints the parts).

``PRODLINE_BENCH_FIX`` (``bench/run.py --fix``) makes a bench worker run with one of
these changes (comma-separated), to compare in the same run:

* ``uncached``: resolve as it was before 792b73c: every release *queries* the application
  workflow for its current revision (answered by a worker, so queued behind every workflow
  task under load) and parses and validates the files again; today it *describes* the
  workflow (answered by the server) and keeps revisions and plans per worker process;
* ``no-copy``: not a change to make, a measure: every attempt links to one shared tree per
  bundle instead of extracting its own copy, so the difference is what the copies cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

Timings = dict[str, list[float]]


def _add(timings: Timings, name: str, began: float) -> None:
    timings.setdefault(name, []).append(time.perf_counter() - began)


def _timed_sync(timings: Timings, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _add(timings, name, began)

    return timed


def _timed_async(timings: Timings, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps an activity's definition, so the worker registers the wrapper
    async def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await function(*args, **kwargs)
        finally:
            _add(timings, name, began)

    return timed


def _timed_workspace(timings: Timings, opener: Callable[..., Any]) -> Callable[..., Any]:
    """``attempt_workspace``, recording its setup (copy) and teardown (removal), not the step."""

    @contextlib.asynccontextmanager
    async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        began = time.perf_counter()
        async with opener(*args, **kwargs) as code:
            _add(timings, "workspace_open", began)
            try:
                yield code
            finally:
                began = time.perf_counter()
        _add(timings, "workspace_close", began)

    return timed


def uncached(resolve_module: Any) -> None:
    """Resolve as before 792b73c: a query for the current revision and a fresh plan every release."""

    async def queried(client: Any, application: str) -> Any:
        return await resolve_module.registered_revision(client, application)  # looked up now: timed too

    resolve_module.current_revision = queried
    resolve_module._PLANS_KEPT = 0  # each plan is dropped as soon as it is kept: never a hit


def no_copy(resolve_module: Any) -> None:
    """Not a fix -- it gives up what the copy is for -- but a measure of what the copy costs: each
    attempt's folder links to one tree per bundle, extracted once per process, instead of holding
    its own extraction (the lock, the folder and its removal stay)."""
    from prodline.artifacts.cache import BundleCache

    extract = BundleCache.checkout
    trees: dict[str, Path] = {}

    def linked(self: Any, ref: Any, into: Path) -> Path:
        tree = trees.get(ref.digest)
        if tree is None:
            tree = trees[ref.digest] = extract(self, ref, Path(tempfile.mkdtemp(prefix="bench-shared-")) / "code")
        if into.is_dir():
            into.rmdir()
        into.symlink_to(tree, target_is_directory=True)
        return into

    BundleCache.checkout = linked


FIXES = {"uncached": uncached, "no-copy": no_copy}


def apply_fixes(names: str) -> None:
    """Apply the trial changes ``names`` (comma-separated) before the worker is built."""
    from prodline.activities import resolve

    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in FIXES:
            raise SystemExit(f"PRODLINE_BENCH_FIX: unknown change {name!r}; choose from {', '.join(FIXES)}")
        FIXES[name](resolve)


def instrument(timings: Timings) -> None:
    """Wrap the path's parts (before the worker is built) so that every call's time is recorded."""
    from prodline.activities import ledger, resolve, steps
    from prodline.artifacts.cache import BundleCache

    if hasattr(resolve, "current_revision"):  # since 792b73c: a describe, then the revision kept per process
        resolve.current_revision = _timed_async(timings, "resolve_current_revision", resolve.current_revision)
    resolve.registered_revision = _timed_async(timings, "resolve_query_revision", resolve.registered_revision)
    resolve._plan = _timed_sync(timings, "resolve_parse_validate_plan", resolve._plan)  # on a plan-cache miss
    # The cache's API moves while bundles are hardened: time whichever of these it has.
    for method in ("tree", "read", "fetch", "checkout"):
        if hasattr(BundleCache, method):
            setattr(BundleCache, method, _timed_sync(timings, f"bundle_cache_{method}", getattr(BundleCache, method)))
    resolve.ResolveActivities.resolve_release = _timed_async(
        timings, "resolve_release_total", resolve.ResolveActivities.resolve_release
    )
    # Not new, for comparison: the other local activity (a signal-with-start to the ledger).
    ledger.LedgerActivities.record_deployment = _timed_async(
        timings, "record_deployment (local, not new)", ledger.LedgerActivities.record_deployment
    )
    steps.attempt_workspace = _timed_workspace(timings, steps.attempt_workspace)


class ThreadsProfile:
    """cProfile in every thread of the process (workflow activations run in a thread pool, the
    event loop and activities in the main thread), merged into one stats file at the end.

    Started before the worker, so that each thread the pool creates starts its own profile (its
    first event, through ``threading.setprofile``). Python only: the SDK's Rust core is not in it.
    """

    def __init__(self) -> None:
        import cProfile
        import threading

        self._new = cProfile.Profile
        self.profiles = [cProfile.Profile()]
        threading.setprofile(self._start_thread)
        self.profiles[0].enable()

    def _start_thread(self, *_: Any) -> None:
        profile = self._new()
        self.profiles.append(profile)
        profile.enable()  # replaces this hook, for this thread

    def dump(self, path: str) -> None:
        import pstats
        import threading

        threading.setprofile(None)
        main, *others = self.profiles
        main.disable()
        stats = pstats.Stats(main)
        for profile in others:  # the worker has stopped: these threads are idle or gone
            stats.add(profile)
        stats.dump_stats(path)


def top(path: str, count: int = 30) -> str:
    """The heaviest functions of a stats file, by own time and by cumulative time."""
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("tottime").print_stats(count)
    stats.sort_stats("cumulative").print_stats(count)
    return out.getvalue()


def summary(timings: Timings) -> dict[str, dict[str, float]]:
    out = {}
    for name, values in sorted(timings.items()):
        ordered = sorted(values)
        out[name] = {
            "calls": len(values),
            "mean_ms": 1000 * statistics.fmean(values),
            "p50_ms": 1000 * ordered[len(ordered) // 2],
            "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "total_s": sum(values),
        }
    return out


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| part | calls | mean | p50 | p95 | total |", "|---|---|---|---|---|---|"]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s['calls']:.0f} | {s['mean_ms']:.1f} ms | {s['p50_ms']:.1f} ms | {s['p95_ms']:.1f} ms | "
            f"{s['total_s']:.2f} s |"
        )
    return "\n".join(lines)


# --- the floor: each part alone, on an idle server ---------------------------------------------


async def floor(n: int) -> dict[str, dict[str, float]]:
    from common import (
        artifact_folders,
        client_for,
        cpu_seconds,
        dev_server,
        register,
        requests_for,
        unique,
        write_project,
    )

    timings: Timings = {}
    instrument(timings)  # before the worker and the activities exist, as in a bench worker
    from prodline.activities import resolve, steps
    from prodline.artifacts.store import open_store
    from prodline.contracts import RunContext, application_id
    from prodline.workers.worker import build_worker

    async with dev_server("pathcost") as server, artifact_folders("pathcost"):
        client = await client_for(server)
        queue = unique("bench-pathcost-")
        with tempfile.TemporaryDirectory(prefix="prodline-bench-pathcost-") as tmp:
            app = unique("cost")
            service_file = write_project(Path(tmp), app, ["noop"])[0]
            async with build_worker(client, queue):
                await register(client, queue, Path(tmp) / "prodline.yaml")
                request = (await requests_for(client, service_file, ["1.0.0"]))[0]
                store = open_store()
                activities = resolve.ResolveActivities(client, store)
                context = RunContext(
                    release_id=request.release_id,
                    application=app,
                    service=request.service,
                    version=request.version,
                    environment="staging",
                    bundle=request.bundle,
                    base_dir=".",
                )
                await activities.resolve_release(request)  # the first fetches the bundle: not counted
                timings.clear()
                cpu: Timings = {}  # CPU of the whole process (the worker answering a query included)
                for _ in range(n):
                    began = time.process_time()
                    await activities.resolve_release(request)
                    cpu.setdefault("cpu: resolve_release_total", []).append(time.process_time() - began)
                    began = time.process_time()
                    async with steps.attempt_workspace(context, store):
                        pass
                    cpu.setdefault("cpu: workspace_open_close", []).append(time.process_time() - began)
                parts = {name: list(values) for name, values in timings.items()}
                # What the server spends on the two ways of reading the current revision: the query
                # (forwarded to a worker through matching) and a describe (the server answers alone).
                assert server.process is not None
                handle = client.get_workflow_handle(application_id(app))
                for name, call in (
                    ("query", lambda: resolve.registered_revision(client, app)),
                    ("describe", handle.describe),
                ):
                    server_cpu, began_cpu = cpu_seconds(server.process.pid), time.process_time()
                    for _ in range(n):
                        began = time.perf_counter()
                        await call()
                        _add(timings, f"current revision by {name}", began)
                    own = (time.process_time() - began_cpu) / n
                    cpu[f"cpu: current revision by {name} (this process, worker included)"] = [own]
                    cpu[f"cpu: current revision by {name} (server)"] = [
                        (cpu_seconds(server.process.pid) - server_cpu) / n
                    ]
                    parts[f"current revision by {name}"] = timings[f"current revision by {name}"]
    return summary(parts) | summary(cpu)


# --- under load: the engine benchmark's prodline batch with an instrumented worker --------------


async def under_load(n: int, fix: str, profile: str = "") -> tuple[dict, dict[str, dict[str, float]]]:
    """One warm-up and one measured prodline batch of bench/engine.py's, the worker instrumented
    (and, with ``profile``, profiled: stats written there)."""
    import engine

    with tempfile.TemporaryDirectory(prefix="prodline-bench-pathcost-") as tmp:
        out = Path(tmp) / "timings.json"
        os.environ["PRODLINE_BENCH_TIMINGS"] = str(out)
        if profile:
            os.environ["PRODLINE_BENCH_PROFILE"] = profile
        try:
            result = await engine.run_prodline_only(n, fix)
        finally:
            os.environ.pop("PRODLINE_BENCH_TIMINGS", None)
            os.environ.pop("PRODLINE_BENCH_PROFILE", None)
        timings = json.loads(out.read_text()) if out.exists() else {}
    return result, summary(timings)


BEGIN = "<!-- pathcost:begin: written by bench/pathcost.py --save -->"
END = "<!-- pathcost:end -->"
TITLE = "## 6. The release path, part by part"


def save(text: str, results: Path) -> None:
    """Put ``text`` between this section's markers in RESULTS.md (bench/report.py keeps the section)."""
    from common import save_section

    save_section(results, text, BEGIN, END, TITLE)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--engine", action="store_true", help="the engine benchmark's prodline batch, instrumented")
    parser.add_argument("--all", action="store_true", help="both: each part alone, then the instrumented batch")
    parser.add_argument("--profile", metavar="FILE", help="with --engine: cProfile the worker into FILE")
    parser.add_argument("--fix", default="", help=f"with --engine: trial changes, comma-separated: {', '.join(FIXES)}")
    parser.add_argument("--save", action="store_true", help="write the tables into bench/RESULTS.md (section 6)")
    args = parser.parse_args()
    from report import machine, machine_line

    out = [
        f"_Run of {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} (`python bench/pathcost.py --all --save`), "
        f"{machine_line(machine())}; 1-min load average before: {os.getloadavg()[0]:.2f}._",
        "",
        "A release resolves its plan in a local activity on the control worker (`activities/resolve.py`: the "
        "application workflow's current revision, the service file read out of the bundle and proven against "
        "its digest, the plan) and runs each step attempt in its own copy of the bundle "
        "(`activities/workspace.py`).",
    ]
    if args.all or not args.engine:
        rows = asyncio.run(floor(args.n))
        out += [
            "",
            f"Each part alone, {args.n} calls in a row, an idle embedded server, the worker in process "
            "(CPU: this process, so the worker answering a query is included; server: the dev server's CPU):",
            "",
            table(rows),
        ]
    if args.all or args.engine:
        result, rows = asyncio.run(under_load(args.n, args.fix, args.profile or ""))
        out += [
            "",
            f"Under load: the engine benchmark's prodline batch (N={args.n} started at once"
            f"{', with ' + args.fix if args.fix else ''}; {result['throughput']:.2f} wf/s, p50 "
            f"{result['p50'] * 1000:.0f} ms, worker CPU {result['worker_cpu_ms']:.0f} ms/wf), every call of the "
            "instrumented worker:",
            "",
            table(rows),
        ]
    text = "\n".join(out)
    print(text)
    if args.engine and args.profile:
        print("\n" + top(args.profile))
    if args.save:
        if args.fix or args.profile:
            raise SystemExit("--save records prodline as it is: not with --fix or --profile")
        from report import RESULTS_MD

        save(text, RESULTS_MD)
        print(f"wrote {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import shutil

    import snapshot

    copy, _ = snapshot.activate()  # as bench/run.py: one fixed copy of prodline, not a tree edited meanwhile
    try:
        status = main()
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    sys.stdout.flush()
    os._exit(status)
