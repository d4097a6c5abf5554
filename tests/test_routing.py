"""Environments routed to their own workers: `task_queue:` in the application file.

The release workflow runs on the control queue (the ``worker`` fixture); staging and
production name queues of their own, each served by a `prodline worker --task-queue Q`
process with its own variables, home and bundle cache, as a worker inside that
environment's network would be. What a step or a rule writes shows which worker ran it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionDescription

from prodline.client import workers
from prodline.contracts import EnvironmentStatus, Phase, ReleaseRef, ReleaseStatus

from conftest import Cli, client_for, run, service, step, wait_for

STARTUP_SECONDS = 30


class QueueWorker:
    """`prodline worker --runtime --task-queue QUEUE` (an environment's own worker; ``runtime=False``:
    a control worker), typed as a user would, in its own process group with its own HOME, bundle
    cache and working directory (the other workers' disks are not its own)."""

    def __init__(self, cli: Cli, queue: str, root: Path, runtime: bool = True, **env: str):
        self.cli, self.queue, self.root, self.runtime = cli, queue, root, runtime
        for folder in ("home", "cache", "cwd"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        self.env = {
            **cli.env,
            "HOME": str(root / "home"),
            "PRODLINE_CACHE_DIR": str(root / "cache"),
            **env,
        }
        self.process: subprocess.Popen | None = None

    def spawn(self) -> QueueWorker:
        log = (self.root / "worker.log").open("w")
        self.process = subprocess.Popen(
            self.cli.argv("worker", *(["--runtime"] if self.runtime else []), "--task-queue", self.queue),
            env=self.env, cwd=self.root / "cwd", stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        return self

    def ready(self, temporal) -> QueueWorker:
        """Once it polls its queue (for activities: what an environment's queue is for)."""

        async def polled() -> bool:
            return await workers.polling(
                await client_for(temporal), self.queue, activities=True, workflows=not self.runtime
            )

        wait_for(lambda: self._alive() and run(polled()), STARTUP_SECONDS, f"a worker polling {self.queue}")
        return self

    def start(self, temporal) -> QueueWorker:
        return self.spawn().ready(temporal)

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker on {self.queue} exited: {self.log()}")
        return True

    @property
    def identity(self) -> str:
        """How Temporal's history names this worker (the SDK's default: pid@host)."""
        assert self.process is not None
        return f"{self.process.pid}@{socket.gethostname()}"

    def log(self) -> str:
        return (self.root / "worker.log").read_text()

    def stop(self) -> None:
        """Kill it and its children (a worker on a machine that went away; no graceful shutdown)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)


@pytest.fixture
def queue_workers(cli) -> Iterator[list[QueueWorker]]:
    """Workers a test starts; all killed at the end."""
    started: list[QueueWorker] = []
    yield started
    for running in started:
        running.stop()


def routed_app(queues: dict[str, str], log: Path) -> str:
    """Staging and production on their own queues; each runs a command check writing where it ran."""
    environments = "".join(
        f"""
  - name: {name}
    task_queue: {queue}
    checks:
      - command: {{run: 'echo "check $RUNTIME $PRODLINE_ENVIRONMENT" >> {log}'}}
        name: where
        when: [before_deploy]
"""
        for name, queue in queues.items()
    )
    return "application: shop\nenvironments:" + environments


def ran(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def unique() -> str:
    return f"rt-{uuid.uuid4().hex[:8]}"


def test_each_environment_runs_only_on_its_own_workers(cli, worker, project, tmp_path, temporal, queue_workers, unique):
    log = tmp_path / "ran.log"
    queues = {"staging": f"{unique}-staging", "production": f"{unique}-production"}
    service_file = project(
        service(
            step("plan-and-deploy", f'echo "deploy $RUNTIME $PRODLINE_ENVIRONMENT" >> {log}'),
            step("verify", f'echo "verify $RUNTIME $PRODLINE_ENVIRONMENT" >> {log}'),
        ),
        app=routed_app(queues, log),
    )
    queue_workers += [
        QueueWorker(cli, queues["staging"], tmp_path / "staging-box", RUNTIME="staging-box").spawn(),
        QueueWorker(cli, queues["production"], tmp_path / "prod-box", RUNTIME="prod-box").spawn(),
    ]
    for started in queue_workers:  # started together: a worker takes seconds to import
        started.ready(temporal)

    result = cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait", "--json", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(log) == [
        "check staging-box staging",
        "deploy staging-box staging",
        "verify staging-box staging",
        "check prod-box production",
        "deploy prod-box production",
        "verify prod-box production",
    ]
    # The control worker (this process: no RUNTIME) ran no step and no rule.
    assert "RUNTIME" not in os.environ
    outcome = json.loads(result.stdout)
    assert [(e["name"], e["task_queue"]) for e in outcome["environments"]] == list(queues.items())

    status = cli.run("release", "status", project.release_id("1.0.0"))
    assert status.returncode == 0, status.stderr
    assert f"on task queue '{queues['production']}'" in status.stdout


def test_a_release_waits_for_the_environment_queue_nobody_polls_and_says_which(
    cli, worker, project, tmp_path, temporal, queue_workers, unique
):
    log = tmp_path / "ran.log"
    queues = {"staging": f"{unique}-staging", "production": f"{unique}-production"}
    service_file = project(
        service(step("deploy", f'echo "deploy $RUNTIME $PRODLINE_ENVIRONMENT" >> {log}')),
        app=routed_app(queues, log),
    )
    queue_workers.append(
        QueueWorker(cli, queues["staging"], tmp_path / "staging-box", RUNTIME="staging-box").start(temporal)
    )
    release = project.release_id("1.1.0")
    cli.env["PRODLINE_WORKER_CHECK_SECONDS"] = "0.5"
    waiting = cli.spawn("release", "start", str(service_file), "--version", "1.1.0", "--wait")
    stderr = Lines(waiting.stderr)

    # Staging is done; production's first rule is scheduled on a queue no worker polls.
    wait_for(lambda: "deploy staging-box staging" in ran(log), what="staging to deploy")
    description = wait_for(lambda: _pending_on(temporal, release, queues["production"]), what="production's rule")
    assert isinstance(description, WorkflowExecutionDescription)

    status = cli.run("release", "status", release)
    assert status.returncode == 0, status.stderr
    line = next(line for line in status.stdout.splitlines() if line.strip().startswith("production"))
    assert "running" in line and f"on task queue '{queues['production']}'" in line

    # What follow (`--wait`) warns: the production queue and environment, not the control queue.
    warning = (
        f"no worker is polling task queue '{queues['production']}' (environment production); "
        "the release does not move until one does"
    )
    warned = wait_for(lambda: stderr.with_text(warning), what="the no-worker warning")
    assert isinstance(warned, str)
    assert f"`prodline worker --runtime --task-queue {queues['production']}` where production runs" in warned
    status_view = cli.json("release", "status", release)
    assert run(_problem(temporal, description, status_view)).startswith(warning)

    # What `release start` can say before the release gets there (from the registered environments).
    assert run(_unserved(temporal, queues)) == [
        f"no worker is polling task queue '{queues['production']}' (environment production); the release will "
        f"wait there until one does (start `prodline worker --runtime --task-queue {queues['production']}` where production runs)"
    ]

    queue_workers.append(
        QueueWorker(cli, queues["production"], tmp_path / "prod-box", RUNTIME="prod-box").start(temporal)
    )
    assert run(_unserved(temporal, queues)) == []
    assert waiting.wait(60) == 0
    assert ran(log) == [
        "check staging-box staging",
        "deploy staging-box staging",
        "check prod-box production",
        "deploy prod-box production",
    ]


async def _unserved(temporal, queues: dict[str, str]) -> list[str]:
    return await workers.unserved(await client_for(temporal), queues)


def _pending_on(temporal, release: str, queue: str) -> WorkflowExecutionDescription | None:
    async def describe() -> WorkflowExecutionDescription:
        return await (await client_for(temporal)).get_workflow_handle(release).describe()

    description = run(describe())
    pending = description.raw_description.pending_activities
    return description if queue in [a.activity_options.task_queue.name for a in pending] else None


async def _problem(temporal, description: WorkflowExecutionDescription, status: dict) -> str:
    control = description.task_queue
    return (
        await workers.problem(
            await client_for(temporal), control, description, status=ReleaseStatus.model_validate(status)
        )
        or ""
    )


class Lines:
    """What a process writes to a stream, read on a thread: a test can look without blocking."""

    def __init__(self, stream):
        self.seen: list[str] = []
        threading.Thread(target=lambda: self.seen.extend(stream), daemon=True).start()

    def with_text(self, text: str) -> str | None:
        return next((line for line in list(self.seen) if text in line), None)


# --- the warning's words, without a server ----------------------------------------------------


def status_with(*environments: EnvironmentStatus) -> ReleaseStatus:
    return ReleaseStatus(**ReleaseRef.of("shop", "checkout", "1.0.0"), initiator="ci", environments=list(environments))


def test_a_queue_is_named_with_the_environments_that_run_there():
    status = status_with(
        EnvironmentStatus(name="staging", task_queue="shared-runtime"),
        EnvironmentStatus(name="qa", task_queue="shared-runtime"),
        EnvironmentStatus(name="production", task_queue="prod-runtime", phase=Phase.running),
    )
    assert workers.where("prod-runtime", status) == "task queue 'prod-runtime' (environment production)"
    assert workers.where("shared-runtime", status) == "task queue 'shared-runtime' (environments staging, qa)"
    assert workers.where("prodline", status) == "task queue 'prodline'"
    assert workers.where("prod-runtime", None) == "task queue 'prod-runtime'"


def test_start_and_status_name_the_environment_queue_nobody_polls(cli, worker, project, temporal, unique):
    queue = f"{unique}-production"
    app = f"application: shop\nenvironments:\n  - name: production\n    task_queue: {queue}\n"
    service_file = project(service(step("deploy", "true")), app=app)
    release = project.release_id("1.2.0")
    warning = f"no worker is polling task queue '{queue}' (environment production)"
    try:
        started = cli.run("release", "start", str(service_file), "--version", "1.2.0")
        assert started.returncode == 0, started.stderr
        assert warning in started.stderr
        wait_for(lambda: _pending_on(temporal, release, queue), what="the deploy step to be scheduled")
        status = cli.run("release", "status", release)
        assert status.returncode == 0 and warning in status.stderr, status.stderr
    finally:
        cli.run("release", "cancel", release)


def test_a_release_started_on_an_environments_queue_is_not_run_by_its_workers(
    cli, worker, project, tmp_path, temporal, queue_workers, unique
):
    """The releaser picks the release's task queue (`--task-queue`). Started on production's own
    queue, it must not find a worker there to run it, and with it the steps of an environment
    that names no queue (staging here) next to production's credentials."""
    log = tmp_path / "ran.log"
    production = f"{unique}-production"
    app = f"application: shop\nenvironments:\n  - name: staging\n  - name: production\n    task_queue: {production}\n"
    service_file = project(service(step("deploy", f'echo "$RUNTIME $PRODLINE_ENVIRONMENT" >> {log}')), app=app)
    queue_workers.append(QueueWorker(cli, production, tmp_path / "prod-box", RUNTIME="prod-box").start(temporal))

    started = cli.run("release", "start", str(service_file), "--version", "1.0.0", "--task-queue", production)
    assert started.returncode == 0, started.stderr
    assert f"no worker is polling task queue '{production}'" in started.stderr
    release = project.release_id("1.0.0")

    async def first_task_waits() -> bool:
        desc = await (await client_for(temporal)).get_workflow_handle(release).describe()
        return desc.raw_description.HasField("pending_workflow_task") and desc.history_length <= 2

    time.sleep(1.5)  # a worker that would take the release polls within milliseconds
    assert run(first_task_waits()), "a runtime worker ran the release's workflow"
    assert not log.exists()
    assert cli.run("release", "cancel", release).returncode == 0
