"""Benchmark 3, the CLI: ``prodline --help`` and ``prodline release start`` against ``temporal workflow start``.

Wall times are medians of fresh processes (one unmeasured warm-up each). The
two starts are interleaved and make the same start: the same input JSON,
workflow ID scheme, task queue, ID policies, search attributes, memo and
summary. No worker polls the release queue, so nothing else loads the machine
while they run; one worker serves the application's registered revision (on a
queue of its own), which ``release start`` asks for before it packs and uploads
the service folder (unchanged between starts: it uploads nothing after the
first). Then one ``python -X importtime`` run of the start and a phase
breakdown (bench/cliphases.py) say where prodline's time goes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    BENCH,
    VENV_BIN,
    artifact_folders,
    client_for,
    dev_server,
    log,
    median,
    prodline_worker,
    ratio,
    register,
    requests_for,
    unique,
    wait_for_pollers,
    write_project,
)
from temporalio.client import Client

from prodline.contracts import RELEASE_WORKFLOW, ReleaseState
from prodline.workers.devserver import temporal_binary
from prodline.workflows import search_attributes as sa

TARGET_HELP = 0.3  # seconds
TARGET_START_RATIO = 1.5  # prodline / temporal CLI


def _timed(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {result.returncode}: {result.stderr.strip()[:500]}")
    return elapsed


def _temporal_start_argv(request, address: str, queue: str) -> list[str]:
    """``temporal workflow start`` making the very start ``prodline release start`` makes
    (prodline.client.releases.ReleaseClient.start)."""
    argv = [temporal_binary(), "workflow", "start", "--address", address, "--namespace", "default"]
    argv += ["--type", RELEASE_WORKFLOW, "--task-queue", queue, "--workflow-id", request.release_id]
    argv += ["--input", request.model_dump_json()]
    argv += ["--id-conflict-policy", "UseExisting", "--id-reuse-policy", "AllowDuplicateFailedOnly"]
    for key, value in (
        (sa.APPLICATION, request.application),
        (sa.SERVICE, request.service),
        (sa.VERSION, request.version),
        (sa.STATE, ReleaseState.running.value),
    ):
        argv += ["--search-attribute", f"{key.name}={json.dumps(value)}"]
    argv += ["--memo", f"digest={json.dumps(request.digest)}", "--memo", f"initiator={json.dumps(request.initiator)}"]
    argv += ["--static-summary", f"{request.service} {request.version} by {request.initiator}"[:200]]
    return argv


def parse_importtime(stderr: str) -> list[dict]:
    """``-X importtime`` lines as rows with their importer (children are printed before parents)."""
    lines = [line for line in stderr.splitlines() if line.startswith("import time:") and "self [us]" not in line]
    stack: dict[int, str] = {}
    rows = []
    for line in reversed(lines):
        self_us, cumulative_us, column = line.split(":", 1)[1].split("|")
        depth = (len(column) - len(column.lstrip()) - 1) // 2
        name = column.strip()
        parent = stack.get(depth - 1) if depth > 0 else None
        stack[depth] = name
        rows.append(
            {"module": name, "self_ms": int(self_us) / 1000, "cum_ms": int(cumulative_us) / 1000, "parent": parent}
        )
    return rows


def summarize_imports(rows: list[dict]) -> dict:
    top_level = sorted((r for r in rows if r["parent"] is None), key=lambda r: -r["cum_ms"])
    by_package: dict[str, float] = {}
    for r in rows:
        package = r["module"].split(".")[0]
        if package == "prodline":
            package = ".".join(r["module"].split(".")[:2])
        by_package[package] = by_package.get(package, 0.0) + r["self_ms"]
    # What prodline's own modules pull in: the heavy third-party imports and who asks for them.
    pulled = sorted(
        (
            r
            for r in rows
            if r["parent"]
            and r["parent"].startswith("prodline")
            and not r["module"].startswith("prodline")
            and r["cum_ms"] >= 3
        ),
        key=lambda r: -r["cum_ms"],
    )
    heaviest = sorted(rows, key=lambda r: -r["self_ms"])[:8]
    return {
        "total_ms": sum(r["cum_ms"] for r in top_level),
        "heaviest_self": [{"module": r["module"], "self_ms": r["self_ms"]} for r in heaviest],
        "top_level": [{"module": r["module"], "cum_ms": r["cum_ms"]} for r in top_level[:8]],
        "by_package": dict(sorted(by_package.items(), key=lambda kv: -kv[1])[:10]),
        "pulled_by_prodline": [{"by": r["parent"], "module": r["module"], "cum_ms": r["cum_ms"]} for r in pulled[:10]],
    }


async def run(quick: bool = False) -> dict:
    runs = 5 if quick else 10
    prodline = str(VENV_BIN / "prodline")
    async with dev_server("cli") as server, artifact_folders("cli"):
        client = await client_for(server)
        queue = unique("bench-cli-nobody-")
        registry = unique("bench-cli-registry-")
        env = dict(
            os.environ,
            TEMPORAL_ADDRESS=server.address,
            TEMPORAL_NAMESPACE="default",
            PRODLINE_TASK_QUEUE=queue,
            PRODLINE_USER="bench",
        )
        with tempfile.TemporaryDirectory(prefix="prodline-bench-cli-") as tmp:
            app = unique("cli")
            service_file = write_project(Path(tmp), app, ["svc"])[0]
            worker = prodline_worker(server.address, registry, Path(tmp) / "registry.log").start()
            try:
                await wait_for_pollers(client, registry, worker)
                await register(client, registry, Path(tmp) / "prodline.yaml")
                result = await _measure(client, server.address, queue, env, prodline, service_file, runs)
            finally:
                worker.stop()
    if result["started_workflows"] != result["expected_workflows"]:
        raise RuntimeError(
            f"expected {result['expected_workflows']} started releases, visibility shows {result['started_workflows']}"
        )
    log(
        f"CLI: --help {result['help'] * 1000:.0f} ms, start {result['prodline_start'] * 1000:.0f} ms vs "
        f"temporal {result['temporal_start'] * 1000:.0f} ms ({result['start_ratio']:.2f}x)"
    )
    return result


async def _measure(
    client: Client, address: str, queue: str, env: dict[str, str], prodline: str, service_file: Path, runs: int
) -> dict:
    floor = [_timed([sys.executable, "-c", "pass"], env) for _ in range(runs + 1)][1:]
    help_times = [_timed([prodline, "--help"], env) for _ in range(runs + 1)][1:]

    prodline_times, temporal_times = [], []
    temporal_requests = await requests_for(client, service_file, [f"2.0.{i}" for i in range(runs + 1)])
    for i, request in enumerate(temporal_requests):
        p = _timed([prodline, "release", "start", str(service_file), "--version", f"1.0.{i}"], env)
        t = _timed(_temporal_start_argv(request, address, queue), env)
        if i:  # the first pair warms up
            prodline_times.append(p)
            temporal_times.append(t)
    expected = 2 * (runs + 1)
    started = 0
    for _ in range(40):  # visibility catches up within moments
        started = (await client.count_workflows(f"TaskQueue = '{queue}' AND WorkflowType = '{RELEASE_WORKFLOW}'")).count
        if started >= expected:
            break
        await asyncio.sleep(0.25)

    start_argv = [sys.executable, "-X", "importtime", "-m", "prodline.cli", "release", "start", str(service_file)]
    profile = subprocess.run([*start_argv, "--version", "3.0.0"], env=env, capture_output=True, text=True, timeout=60)
    imports = summarize_imports(parse_importtime(profile.stderr))

    phase_runs, phases_error = [], ""
    for i in range(max(3, runs // 2)):
        out = subprocess.run(
            [sys.executable, str(BENCH / "cliphases.py"), str(service_file), f"4.0.{i}", address, queue],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:  # the breakdown is a diagnosis: its failure does not void the timings
            phases_error = (out.stderr.strip().splitlines() or ["exit " + str(out.returncode)])[-1]
            log(f"CLI phase breakdown failed: {phases_error}")
            break
        phase_runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    phases = {key: median([p[key] for p in phase_runs]) for key in phase_runs[0]} if phase_runs else {}

    result = {
        "runs": runs,
        "python_floor": median(floor),
        "help": median(help_times),
        "prodline_start": median(prodline_times),
        "temporal_start": median(temporal_times),
        "start_ratio": ratio(median(prodline_times), median(temporal_times)),
        "started_workflows": started,
        "expected_workflows": expected,
        "imports": imports,
        "phases": phases,
        "phases_error": phases_error,
    }
    result["targets"] = {
        "help": {"target": f"< {TARGET_HELP} s", "value": result["help"], "met": result["help"] < TARGET_HELP},
        "start_ratio": {
            "target": f"<= {TARGET_START_RATIO}",
            "value": result["start_ratio"],
            "met": result["start_ratio"] <= TARGET_START_RATIO,
        },
    }
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(quick=True)), indent=1))
