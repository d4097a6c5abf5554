"""CI from another machine: the GitHub Actions example, run as GitHub would run its release step.

The release step's script is taken from ``examples/ci/github-actions.yml`` as it is written
and run with GitHub's shell, in a checkout the worker never sees. The CI side and the worker
(a ``prodline worker`` process in a folder, a cache and a temp dir of its own) share only
Temporal and the S3 artifact store (the session's SeaweedFS), as two machines would.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, Cli, history_text

EXAMPLE = REPO / "examples/ci/github-actions.yml"
# What GitHub runs a `shell: bash` step's script with.
GITHUB_BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]
# The variables the release step maps from secrets and settings, each given here by the test.
STEP_VARIABLES = {
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "PRODLINE_TASK_QUEUE",
    "PRODLINE_ARTIFACTS",
}


def example() -> dict[Any, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def release_step(doc: dict[Any, Any]) -> dict[str, Any]:
    return next(s for s in doc["jobs"]["release"]["steps"] if s.get("id") == "release")


# --- the file ----------------------------------------------------------------------------------


def test_the_example_is_a_workflow_that_releases_after_the_build():
    doc = example()
    # YAML 1.1 (PyYAML) reads the key `on` as true; GitHub reads it as `on`.
    assert doc[True] == {"push": {"branches": ["main"]}}
    assert doc["defaults"] == {"run": {"shell": "bash"}}
    release = doc["jobs"]["release"]
    assert release["needs"] == "build"
    steps = release["steps"]
    assert any(s.get("run", "").startswith("pip install prodline") for s in steps)
    assert any(s.get("uses", "").startswith("aws-actions/configure-aws-credentials@") for s in steps)
    assert doc["permissions"]["id-token"] == "write"  # OIDC for the AWS role

    step = release_step(doc)
    assert set(step["env"]) == STEP_VARIABLES
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY"):
        assert step["env"][name] == f"${{{{ secrets.{name} }}}}"
    assert step["env"]["PRODLINE_ARTIFACTS"].startswith("s3://")
    # The script reads only variables, so the one tested here is the one GitHub runs.
    assert "${{" not in step["run"]
    assert 'prodline release start "$SERVICE_FILE" --version "$GITHUB_SHA"' in step["run"]
    assert "--wait --timeout 45m" in step["run"]
    assert release["timeout-minutes"] > 45  # prodline reports its own timeout before GitHub kills the job


# --- two machines --------------------------------------------------------------------------------


class Machines:
    """The platform team, a CI runner and a worker machine, in folders of their own."""

    def __init__(self, root: Path, temporal_address: str, task_queue: str, store_env: dict[str, str], store_url: str):
        self.root = root
        self.application = f"shop-{uuid.uuid4().hex[:6]}"
        self.outbox = root / "world"  # what the deploy "changes": written by the worker only
        self.outbox.mkdir()
        self.ci = root / "ci-runner" / "work" / "checkout-repo"
        self.worker_home = root / "worker-machine"
        (self.worker_home / "tmp").mkdir(parents=True)
        shared = {
            "TEMPORAL_ADDRESS": temporal_address,
            "TEMPORAL_NAMESPACE": "default",
            "PRODLINE_TASK_QUEUE": task_queue,
            "PRODLINE_ARTIFACTS": store_url,
            "PRODLINE_POLL_SECONDS": "0.1",
            **store_env,
        }
        base = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.ci_env = {**base, **shared, "HOME": str(self.ci.parent), "GITHUB_ACTOR": "ci-bot"}
        self.worker_env = {
            **base,
            **shared,
            "HOME": str(self.worker_home),
            "TMPDIR": str(self.worker_home / "tmp"),  # where each attempt's copy of the bundle goes
            "PRODLINE_CACHE_DIR": str(self.worker_home / "cache"),
            "PRODLINE_TERRAFORM_DATA_DIR": str(self.worker_home / "terraform"),
        }

    def platform_files(self) -> Path:
        """The application the platform team registers: a smoke check its own bundle carries."""
        folder = self.root / "platform"
        folder.mkdir()
        smoke = folder / "smoke.sh"
        smoke.write_text(f'#!/bin/sh\necho "smoke $PRODLINE_ENVIRONMENT $(pwd)" >> {self.outbox}/log\n')
        smoke.chmod(0o755)
        app = folder / "prodline.yaml"
        app.write_text(
            f"application: {self.application}\nenvironments:\n  - name: staging\n  - name: production\n"
            "    checks:\n      - command: {run: ./smoke.sh}\n        when: [after_deploy]\n"
        )
        return app

    def checkout(self, service_file: str, deploy: str) -> None:
        """The service's repository as the CI runner checked it out (no application file in it)."""
        path = self.ci / service_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            textwrap.dedent(f"""\
                service: checkout
                application: {self.application}
                parameters:
                  image: {{type: image}}
                steps:
                  - name: deploy
                    command: {{apply: './deploy.sh {{{{ params.image }}}}'}}
                    timeout: 1m
                    heartbeat_timeout: 2s
                    retry: {{attempts: 1}}
            """)
        )
        script = path.parent / "deploy.sh"
        script.write_text("#!/bin/sh\nset -eu\n" + deploy.replace("OUTBOX", str(self.outbox)))
        script.chmod(0o755)

    def release_step(self, script: str, sha: str, image: str, **extra: str) -> subprocess.CompletedProcess:
        """The release step's script in the checkout, with the variables GitHub would give it."""
        env = {**self.ci_env, "GITHUB_SHA": sha, "IMAGE": image, **extra}
        env |= {"SERVICE_FILE": example()["env"]["SERVICE_FILE"]}
        return subprocess.run([*GITHUB_BASH, script], cwd=self.ci, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def machines(tmp_path, temporal, task_queue, s3_server) -> Machines:
    url = f"{s3_server.url}/ci-{uuid.uuid4().hex[:8]}"
    return Machines(tmp_path, temporal.address, task_queue, s3_server.env, url)


@pytest.fixture
def remote_worker(machines: Machines) -> Iterator[subprocess.Popen]:
    """`prodline worker` on the worker machine: its own folder, environment, cache and temp dir."""
    log = (machines.worker_home / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "prodline.cli", "worker"],
        cwd=machines.worker_home,
        env=machines.worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    log.close()


def test_a_release_started_by_ci_runs_on_a_worker_that_never_saw_the_checkout(
    machines: Machines, cli: Cli, remote_worker, temporal
):
    platform = Cli({**cli.env, **machines.worker_env, "HOME": str(machines.root / "platform-home")})
    platform.apply(machines.platform_files())
    service_file = example()["env"]["SERVICE_FILE"]
    machines.checkout(service_file, 'echo "deploy $PRODLINE_ENVIRONMENT $PRODLINE_VERSION $1 $(pwd)" >> OUTBOX/log\n')
    script = release_step(example())["run"]

    sha = secrets.token_hex(20)
    image = f"ghcr.io/acme/shop/checkout:{sha}"
    result = machines.release_step(script, sha, image)
    release = f"{machines.application}.checkout@{sha}"
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"release {release} succeeded" in result.stdout
    assert "::error::" not in result.stdout

    lines = [line.split() for line in (machines.outbox / "log").read_text().splitlines()]
    assert [line[:2] for line in lines] == [
        ["deploy", "staging"], ["deploy", "production"], ["smoke", "production"]
    ]  # fmt: skip
    assert [line[2:4] for line in lines[:2]] == [[sha, image], [sha, image]]
    # Every step and check ran in the worker's own copy of a bundle, never in the checkout.
    for line in lines:
        ran_in = Path(line[-1])
        assert ran_in.is_relative_to(machines.worker_home), line  # its own copy, under its cache
        assert not ran_in.is_relative_to(machines.ci)
    # Nothing the workflow was sent or recorded names a path on the CI machine.
    assert str(machines.ci) not in history_text(temporal, release)
    assert str(machines.root / "ci-runner") not in history_text(temporal, release)

    # The next commit breaks the deploy: the step exits with the release's code, 1 (failed).
    machines.checkout(service_file, 'echo "cannot pull $1" >&2\nexit 3\n')
    sha = secrets.token_hex(20)
    failed = machines.release_step(script, sha, f"ghcr.io/acme/shop/checkout:{sha}")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "staging: step deploy failed" in failed.stdout and "cannot pull" in failed.stdout
    assert "::error::the release failed: a step or rule failed" in failed.stdout


def test_invalid_input_is_exit_2_and_names_the_fix(machines: Machines):
    # Nobody registered the application: the job fails before anything starts.
    service_file = example()["env"]["SERVICE_FILE"]
    machines.checkout(service_file, "true\n")
    result = machines.release_step(release_step(example())["run"], secrets.token_hex(20), "img")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "`prodline app apply" in result.stderr
    assert "::error::prodline exited with 2 (2: invalid input" in result.stdout


def test_a_secret_the_repository_does_not_define_means_unset(machines: Machines):
    # GitHub expands an undefined secret to an empty string: a team without Temporal API keys
    # (a self-hosted server, mTLS) gets TEMPORAL_API_KEY="" from the example as written. It
    # must mean "no API key", not "an empty key, so TLS on", which fails against a plain server.
    env = {**machines.ci_env, "TEMPORAL_API_KEY": ""}
    result = subprocess.run(
        ["prodline", "release", "list", "--limit", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
