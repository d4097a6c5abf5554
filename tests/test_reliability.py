"""Proof that prodline keeps its promises when things die.

* The worker is killed (SIGKILL, with every process it started, as when its
  container dies) at every step boundary and in the middle of every step of a
  two-environment release, then restarted: every release completes, and no
  step whose success was recorded before the kill runs again. Side effects
  are counted in a log the steps append to.
* The worker is killed in the middle of a Terraform apply: Terraform's state
  stays usable (no lock left behind) and the release completes, with nothing
  left tainted.
* The embedded Temporal server is stopped mid-release and started again on
  the same SQLite file: the release completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prodline.activities.steps.terraform import local_state_dir
from prodline.workers.devserver import DevServer
from prodline.workers.supervisor import free_port

from conftest import REGISTRY_QUEUE, Cli, WorkerThread, client_for, process_alive, run, wait_for

pytestmark = pytest.mark.slow

ENVIRONMENTS = ("staging", "production")
STEPS = ("migrate", "deploy", "verify")
ORDER = [(env, step) for env in ENVIRONMENTS for step in STEPS]


def write_release(root: Path, app_name: str, hold: tuple[str, str] | None) -> Path:
    """Three steps in two environments; `hold` blocks until a gate file appears.

    Steps run in a copy of the service's bundle: the log and the gate are in ``root`` by its path."""
    (root / "prodline.yaml").write_text(
        f"application: {app_name}\nenvironments:\n  - name: staging\n  - name: production\n"
    )
    svc = root / "svc"
    svc.mkdir()
    script = svc / "step.sh"
    gate_env, gate_step = hold or ("", "")
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        echo "$PRODLINE_ENVIRONMENT/$1 start" >> {root}/log
        if [ "$PRODLINE_ENVIRONMENT/$1" = "{gate_env}/{gate_step}" ]; then
          while [ ! -f {root}/gate ]; do sleep 0.05; done
        fi
        echo "$PRODLINE_ENVIRONMENT/$1 done" >> {root}/log
        """)
    )
    script.chmod(0o755)
    steps = "".join(
        f"  - name: {s}\n    command: {{apply: './step.sh {s}'}}\n    heartbeat_timeout: 2s\n"
        f"    retry: {{initial_interval: 100ms}}\n"
        for s in STEPS
    )
    (svc / "prodline.service.yaml").write_text(f"service: checkout\napplication: {app_name}\nsteps:\n{steps}")
    return svc / "prodline.service.yaml"


def kill_worker_and_children(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and every process it started: what a dying container does."""
    victims = [proc.pid, *_descendants(proc.pid)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


async def completed_steps(temporal: DevServer, release_id: str) -> int:
    """How many apply_step activities have completed, per the workflow's history."""
    client = await client_for(temporal)
    history = await client.get_workflow_handle(release_id).fetch_history()
    applies = {
        e.event_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "prodline.apply_step"
    }
    return sum(
        1
        for e in history.events
        if e.HasField("activity_task_completed_event_attributes")
        and e.activity_task_completed_event_attributes.scheduled_event_id in applies
    )


def scenario(cli, temporal, root: Path, kind: str, index: int) -> tuple[str, int, dict[str, int], str]:
    app_name = f"crash-{uuid.uuid4().hex[:6]}"
    hold = ORDER[index] if kind == "mid" else None
    service_file = write_release(root, app_name, hold)
    env = dict(cli.env, PRODLINE_TASK_QUEUE=f"crash-{uuid.uuid4().hex[:8]}")
    release = f"{app_name}.checkout@1.0.0"

    worker = cli.worker(env)
    try:
        started = Cli(env).run("release", "start", str(service_file), "--version", "1.0.0")
        assert started.returncode == 0, started.stderr
        log = root / "log"
        if kind == "mid":
            env_name, step = ORDER[index]
            wait_for(
                lambda: log.exists() and f"{env_name}/{step} start" in log.read_text(),
                timeout=60,
                what="the step to start",
            )
        else:
            wait_for(
                lambda: run(completed_steps(temporal, release)) >= index, timeout=60, what=f"{index} completed steps"
            )
        kill_worker_and_children(worker)
        completed_at_kill = run(completed_steps(temporal, release))
        (root / "gate").touch()
        worker = cli.worker(env)
        result = Cli(env).run(
            "release", "start", str(service_file), "--version", "1.0.0", "--wait", "--json", timeout=120
        )
        state = json.loads(result.stdout)["state"] if result.stdout else result.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    starts = {f"{e}/{s}": (root / "log").read_text().count(f"{e}/{s} start") for e, s in ORDER}
    return state, completed_at_kill, starts, f"{kind}@{index}"


def test_worker_killed_at_every_step_boundary_and_mid_step(cli, temporal, tmp_path):
    points = [("boundary", k) for k in range(len(ORDER))] + [("mid", k) for k in range(len(ORDER))]
    roots = []
    for kind, k in points:
        root = tmp_path / f"{kind}-{k}"
        root.mkdir()
        roots.append(root)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(
                lambda args: scenario(cli, temporal, *args),
                [(r, k, i) for r, (k, i) in zip(roots, points, strict=True)],
            )
        )
    for state, completed_at_kill, starts, name in results:
        assert state == "succeeded", name
        for position, (env, step) in enumerate(ORDER):
            key = f"{env}/{step}"
            assert starts[key] >= 1, f"{name}: {key} never ran"
            if position < completed_at_kill:
                assert starts[key] == 1, (
                    f"{name}: {key} had reported success before the kill but ran {starts[key]} times"
                )
            else:
                assert starts[key] <= 2, f"{name}: {key} ran {starts[key]} times"
    # The mid-step kills really cut steps off: each of those steps ran again.
    assert all(
        starts[f"{ORDER[i][0]}/{ORDER[i][1]}"] == 2
        for (state, _, starts, name), (kind, i) in zip(results, points, strict=True)
        if kind == "mid"
    )


def test_server_restart_mid_release(tmp_path, cli):
    server = DevServer(tmp_path / "state", port=free_port(), ui=False)
    asyncio.run(server.start())
    root = tmp_path / "project"
    root.mkdir()
    app_name = f"restart-{uuid.uuid4().hex[:6]}"
    service_file = write_release(root, app_name, ("staging", "deploy"))
    env = dict(cli.env, TEMPORAL_ADDRESS=server.address, PRODLINE_TASK_QUEUE="restart")
    worker = WorkerThread(server.address, "restart").start()
    # The application is registered on this server too, and its entity workflow must outlive the restart.
    registry = WorkerThread(server.address, REGISTRY_QUEUE).start()
    try:
        started = Cli(env).run("release", "start", str(service_file), "--version", "1.0.0")
        assert started.returncode == 0, started.stderr
        wait_for(
            lambda: (root / "log").exists() and "staging/deploy start" in (root / "log").read_text(),
            what="deploy to start",
        )
        server.stop()  # mid-step: the command keeps running on the worker
        time.sleep(1)
        (root / "gate").touch()
        asyncio.run(server.start())  # same SQLite file, same port
        result = Cli(env).run(
            "release", "start", str(service_file), "--version", "1.0.0", "--wait", "--json", timeout=180
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["state"] == "succeeded"
    finally:
        worker.stop()
        registry.stop()
        server.stop()
    log = (root / "log").read_text()
    assert log.count("staging/migrate start") == 1
    assert log.count("production/verify done") >= 1


TERRAFORM_MODULE = """
variable "app_version" { type = string }
resource "terraform_data" "app" {
  input = var.app_version
  provisioner "local-exec" {
    command = "echo start >> ROOT/provisioned; sleep 3; echo done >> ROOT/provisioned"
  }
}
"""


@pytest.mark.parametrize("kill", ["with its children", "alone"])
def test_worker_killed_mid_terraform_apply(cli, temporal, tmp_path, kill):
    """A Terraform apply cut off with its worker: Terraform's state stays usable and the release completes.

    Killed alone (the OOM killer, `kill -9`), the worker takes its Terraform with it: interrupted
    like Ctrl-C, so the cut-off provisioner never finishes, and the retry waits for the lock."""
    from prodline.activities.terraform import embedded_terraform_binary

    app_name = f"crash-tf-{uuid.uuid4().hex[:6]}"
    (tmp_path / "prodline.yaml").write_text(
        f"application: {app_name}\nenvironments:\n  - name: staging\n  - name: production\n"
    )
    svc = tmp_path / "svc"
    (svc / "infra").mkdir(parents=True)
    # Terraform and the steps run in a copy of the bundle: what they leave for the test is in tmp_path.
    (svc / "infra" / "main.tf").write_text(TERRAFORM_MODULE.replace("ROOT", str(tmp_path)))
    (svc / "prodline.service.yaml").write_text(
        f"service: checkout\napplication: {app_name}\nsteps:\n"
        f"  - name: infra\n    terraform: {{dir: infra, binary: {embedded_terraform_binary()}, variables: {{app_version: '{{{{ version }}}}'}}}}\n"
        "    heartbeat_timeout: 3s\n    retry: {initial_interval: 100ms}\n"
        f"  - name: announce\n    command: {{apply: 'echo \"$PRODLINE_ENVIRONMENT\" >> {tmp_path}/announced'}}\n"
    )
    env = dict(cli.env, PRODLINE_TASK_QUEUE=f"crash-tf-{uuid.uuid4().hex[:6]}")
    worker = cli.worker(env)
    try:
        started = Cli(env).run("release", "start", str(svc / "prodline.service.yaml"), "--version", "7.0.0")
        assert started.returncode == 0, started.stderr
        wait_for(
            lambda: any(p.name == "sleep" for p in _processes_under(worker.pid)),
            timeout=90,
            what="terraform's provisioner to run",
        )
        if kill == "alone":
            tools = _processes_under(worker.pid)
            worker.kill()
            worker.wait()
            wait_for(lambda: not any(process_alive(p.pid) for p in tools), timeout=10, what="the tools to stop")
        else:
            kill_worker_and_children(worker)
        worker = cli.worker(env)
        result = Cli(env).run(
            "release",
            "start",
            str(svc / "prodline.service.yaml"),
            "--version",
            "7.0.0",
            "--wait",
            "--json",
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    for workspace in ("staging", "production"):  # one workspace per environment, named after it
        # The worker keeps local state in its data dir, not in the module's (copied) folder.
        state_dir = local_state_dir(app_name, "checkout", workspace, "infra") / "workspaces" / workspace
        state = json.loads((state_dir / "terraform.tfstate").read_text())
        [app] = [r for r in state["resources"] if r["name"] == "app"]
        assert app["instances"][0]["attributes"]["input"]["value"] == "7.0.0"
        assert "status" not in app["instances"][0]  # not left tainted
    assert (tmp_path / "announced").read_text().split() == ["staging", "production"]
    provisioned = (tmp_path / "provisioned").read_text().split()
    assert provisioned.count("done") == provisioned.count("start") - 1  # all but the cut-off one finished


class _Proc:
    def __init__(self, pid: int):
        self.pid = pid
        try:
            self.name = (Path("/proc") / str(pid) / "comm").read_text().strip()
        except OSError:
            self.name = ""


def _processes_under(pid: int) -> list[_Proc]:
    return [_Proc(p) for p in _descendants(pid)]
