"""The terraform step end to end: real Terraform (embedded), plan before approval, the approved plan applied."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from prodline.activities.steps import apply_step, plan_step
from prodline.activities.steps.terraform import TerraformRunner, local_state_dir
from prodline.activities.terraform import (
    OVERRIDE_FILE,
    Backend,
    TerraformCli,
    embedded_terraform_binary,
    local_state_override,
    terraform_env,
)
from prodline.config.loader import load_service
from prodline.config.release import load_plan
from prodline.contracts import STALE_PLAN, StepResult, StepRun

from conftest import approval_app, client_for, history_text, run, run_context, wait_for, waiting_in

MODULE = """
variable "app_version" { type = string }
variable "db_password" {
  type      = string
  sensitive = true
  default   = ""
}
variable "delay" {
  type    = number
  default = 0
}
resource "terraform_data" "app" {
  input = var.app_version
}
resource "terraform_data" "db" {
  input = "db-${terraform.workspace}"
  provisioner "local-exec" {
    command = "sleep ${var.delay}"
  }
}
output "url" {
  value = "https://${terraform.workspace}.shop.test/${var.app_version}"
}
output "password" {
  value     = var.db_password
  sensitive = true
}
"""

SERVICE = """
service: checkout
application: shop
parameters:
  db_password: {type: secret, from_env: CHECKOUT_DB_PASSWORD}
  delay: {type: int, default: 0}
steps:
  - name: infra
    terraform:
      dir: infra
      binary: BINARY
      variables: {app_version: "{{ version }}", delay: "{{ params.delay }}"}
    heartbeat_timeout: 5s
    retry: {attempts: 2, initial_interval: 100ms}
  - name: announce
    command:
      apply: 'echo "$URL" > "../url-$PRODLINE_ENVIRONMENT"; echo "$PASS" > "../pass-$PRODLINE_ENVIRONMENT"'
      env: {URL: "{{ steps.infra.outputs.url }}", PASS: "{{ steps.infra.outputs.password }}"}
"""

SECRET = "pw-7f3a-not-for-history"


@pytest.fixture
def terraform_project(project, tmp_path, monkeypatch):
    monkeypatch.setenv("CHECKOUT_DB_PASSWORD", SECRET)
    binary = embedded_terraform_binary()

    def write(service: str = SERVICE, app: str = approval_app(), module: str = MODULE) -> Path:
        service_file = project(service.replace("BINARY", binary), app=app)
        (service_file.parent / "infra").mkdir(exist_ok=True)
        (service_file.parent / "infra" / "main.tf").write_text(textwrap.dedent(module))
        return service_file

    return write


def infra_state(service_file: Path, environment: str) -> Path:
    """Where the worker keeps the infra step's local state in ``environment``: its data dir, never
    the module's folder (a throwaway copy of the bundle)."""
    return local_state_dir(load_service(service_file)[0].application, "checkout", environment, "infra")


def state_folder(service_file: Path, environment: str) -> Path:
    """The folder of the state file (and its lock) of the environment's workspace (named after it)."""
    return infra_state(service_file, environment) / "workspaces" / environment


def _state(service_file: Path, environment: str) -> dict:
    return json.loads((state_folder(service_file, environment) / "terraform.tfstate").read_text())


def test_plan_is_shown_before_approval_and_applied_per_workspace(
    cli, worker, project, terraform_project, temporal, tmp_path
):
    service_file = terraform_project()
    release = project.release_id("5.0.0")
    with structlog.testing.capture_logs() as logs:
        waiting = cli.spawn("release", "start", str(service_file), "--version", "5.0.0", "--wait")
        status = waiting_in(cli, release, "production", "approvals")
        infra = status["environments"][1]["steps"][0]
        assert infra["summary"] == "2 to add, 0 to change, 0 to destroy"
        assert "create: terraform_data.app" in infra["plan"] and "create: terraform_data.db" in infra["plan"]
        assert not (state_folder(service_file, "production") / "terraform.tfstate").exists()
        shown = cli.run("release", "status", release).stdout  # what a person reads before approving
        assert "plan of infra: 2 to add" in shown and "create: terraform_data.app" in shown
        approval = cli.run("approve", release, "--as", "alice")
        assert approval.returncode == 0
        # The approver sees the plan, and the digest a signed approval would name.
        assert f"plan of infra [plan {infra['plan_digest'].removeprefix('sha256:')[:12]}]: 2 to add" in approval.stdout
        assert "create: terraform_data.app" in approval.stdout
        assert waiting.wait(120) == 0, waiting.stdout.read()
    for workspace in ("staging", "production"):
        resources = {r["name"]: r for r in _state(service_file, workspace)["resources"]}
        assert resources["app"]["instances"][0]["attributes"]["input"]["value"] == "5.0.0"
        # Outputs of the terraform step reached the next step, sensitive ones included.
        assert (tmp_path / f"url-{workspace}").read_text().strip() == f"https://{workspace}.shop.test/5.0.0"
        assert (tmp_path / f"pass-{workspace}").read_text().strip() == SECRET

    history = history_text(temporal, release)
    assert "https://production.shop.test/5.0.0" in history  # plain outputs are visible
    assert SECRET not in history
    assert SECRET not in json.dumps(logs, default=str)
    assert SECRET not in cli.run("release", "status", release, "--json").stdout


def test_a_stale_plan_is_planned_again_and_approved_again(cli, worker, project, terraform_project, tmp_path):
    prepare = "  - name: prepare\n    command: {apply: 'echo run >> \"../prepared-$PRODLINE_ENVIRONMENT\"'}\n"
    service_file = terraform_project(SERVICE.replace("steps:\n", "steps:\n" + prepare))
    release = project.release_id("5.0.1")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "5.0.1", "--wait")
    waiting_in(cli, release, "production", "approvals")
    # Someone applies to production by hand while the plan awaits approval.
    by_hand = by_hand_in(service_file, "production", {"TF_VAR_app_version": "hotfix"})

    async def apply_by_hand() -> None:
        await by_hand.apply((await by_hand.plan("by-hand.tfplan")).planfile)

    run(apply_by_hand())

    assert cli.run("approve", release, "--as", "alice").returncode == 0
    status = waiting_in(cli, release, "production", "0/1 approvals")  # asked again, with a new plan
    messages = [e["message"] for e in status["events"]]
    assert any("the approved plan is stale" in m and "planning again" in m for m in messages), messages
    assert status["environments"][1]["steps"][1]["summary"] == "0 to add, 1 to change, 0 to destroy"
    assert cli.run("approve", release, "--as", "alice").returncode == 0
    assert waiting.wait(120) == 0
    # The step applied before the stale one did not run again.
    assert (tmp_path / "prepared-production").read_text().count("run") == 1
    app = {r["name"]: r for r in _state(service_file, "production")["resources"]}["app"]
    assert app["instances"][0]["attributes"]["input"]["value"] == "5.0.1"


def by_hand_in(service_file: Path, environment: str, env: dict[str, str]) -> TerraformCli:
    """Terraform as a person at a terminal would run it on the step's module and workspace: in a
    checkout of their own (not the service's folder, which releases bundle), on the state the
    worker keeps for the step, as an override file of their own names it."""
    own = service_file.parent.parent / "by-hand"
    shutil.copytree(service_file.parent / "infra", own / "infra", dirs_exist_ok=True)
    override = local_state_override(Backend("local"), infra_state(service_file, environment))
    assert override is not None
    (own / "infra" / OVERRIDE_FILE).write_text(override)
    cli = TerraformCli(embedded_terraform_binary(), str(own / "infra"), {"TF_DATA_DIR": str(own / "data"), **env})

    async def prepare() -> None:
        await cli.init()
        await cli.select_workspace(environment)

    run(prepare())
    return cli


def infra_step(service_file: Path, version: str) -> StepRun:
    """The infra step of the service in staging, as the workflow would hand it to an activity."""
    plan = load_plan(service_file, {}, "ci-bot")
    service, _ = load_service(service_file)
    context = run_context(plan, version=version, application=service.application, run_id="run-1")
    return StepRun(context=context, step=plan.environments[0].steps[0])


def test_a_retried_apply_of_a_plan_an_earlier_attempt_applied_succeeds(terraform_project):
    """The worker died after Terraform applied the approved plan but before the step reported
    success. Temporal runs the apply again; Terraform calls the saved plan stale (the state moved
    on, to just what was approved). That must not ask for approval again."""
    service_file = terraform_project()
    infra = infra_step(service_file, "5.0.4")

    def attempt(number: int, activity, step_run: StepRun) -> StepResult:
        environment = ActivityEnvironment()
        environment.info = dataclasses.replace(environment.info, attempt=number)
        return asyncio.run(environment.run(activity, step_run))

    approved = infra.model_copy(update={"plan": attempt(1, plan_step, infra)})
    first = attempt(1, apply_step, approved)
    again = attempt(2, apply_step, approved)
    assert again.summary == "applied by attempt 1 or earlier (nothing left to change)"
    assert again.outputs == first.outputs == {"url": "https://staging.shop.test/5.0.4"}

    # Stale on a first attempt is a change since approval, and so is a retry with changes left.
    with pytest.raises(ApplicationError) as stale_first:
        attempt(1, apply_step, approved)
    infra_dir = service_file.parent / "infra"
    (infra_dir / "more.tf").write_text('resource "terraform_data" "cache" {\n  input = "x"\n}\n')
    with pytest.raises(ApplicationError) as stale_retry:
        attempt(2, apply_step, approved)
    assert stale_first.value.type == stale_retry.value.type == STALE_PLAN


def test_a_syntax_error_fails_fast_with_terraforms_message(cli, worker, terraform_project):
    service_file = terraform_project(module=MODULE.replace("input = var.app_version", "input = var.app_version +"))
    result = cli.run("release", "start", str(service_file), "--version", "5.0.2", "--wait", "--json")
    assert result.returncode == 1
    reason = json.loads(result.stdout)["reason"]
    assert reason.startswith("staging: step infra failed:")
    assert "main.tf:" in reason and "Invalid expression" in reason


def heartbeat(temporal, workflow_id: str) -> dict:
    """Details of the latest heartbeat of the release's running activity, as Temporal shows them."""

    async def describe():
        client = await client_for(temporal)
        return await client.get_workflow_handle(workflow_id).describe()

    pending = run(describe()).raw_description.pending_activities
    if not pending or not pending[0].heartbeat_details.payloads:
        return {}
    return json.loads(pending[0].heartbeat_details.payloads[0].data)


def test_cancelling_a_slow_apply_interrupts_terraform_and_leaves_no_lock(
    cli, worker, project, terraform_project, temporal
):
    service_file = terraform_project()
    release = project.release_id("5.0.3")
    cli.run("release", "start", str(service_file), "--version", "5.0.3", "--param", "delay=60")
    lock = state_folder(service_file, "staging") / ".terraform.tfstate.lock.info"

    def applying() -> bool:
        status = cli.run("release", "status", release, "--json")
        return status.returncode == 0 and json.loads(status.stdout)["environments"][0]["steps"][0]["phase"] == "running"

    wait_for(applying, timeout=60, what="the apply to start")
    # Heartbeats carry progress: the first resource is done, the slow one is still being created.
    wait_for(lambda: heartbeat(temporal, release).get("resources") == 1, timeout=30, what="progress in heartbeats")
    wait_for(lock.exists, timeout=30, what="terraform to take its lock")
    result = cli.run("release", "cancel", release, "--wait", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["state"] == "cancelled"
    assert not lock.exists()
    # The state is unlocked: a plain plan (with locking, not waiting for the lock) works at once.
    after = by_hand_in(service_file, "staging", {"TF_VAR_app_version": "x"})
    run(dataclasses.replace(after, lock_timeout=timedelta(0)).plan("after.tfplan"))


def test_cancelling_a_slow_plan_interrupts_terraform(cli, worker, project, terraform_project, tmp_path):
    # Your own terraform binary, slow to plan: it notes a Ctrl-C (SIGINT) if it gets one.
    wrapper = tmp_path / "slow-plan-terraform"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = plan ]; then\n'
        f"  trap 'echo interrupted > {tmp_path}/plan-interrupted; exit 130' INT\n"
        f"  touch {tmp_path}/planning\n"
        "  sleep 30 >/dev/null 2>&1 & wait $!\n"
        "fi\n"
        f'exec {embedded_terraform_binary()} "$@"\n'
    )
    wrapper.chmod(0o755)
    service_file = terraform_project(SERVICE.replace("BINARY", str(wrapper)))
    release = project.release_id("5.0.5")
    assert cli.run("release", "start", str(service_file), "--version", "5.0.5").returncode == 0
    wait_for(lambda: (tmp_path / "planning").exists(), timeout=60, what="the plan to start")
    result = cli.run("release", "cancel", release, "--wait", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["state"] == "cancelled"
    assert (tmp_path / "plan-interrupted").exists()  # stopped like Ctrl-C, not waited out


def test_a_plan_waits_for_a_state_lock_being_released(terraform_project):
    """A retry after a worker died finds the state locked while the old Terraform unwinds: the
    step waits for the lock (up to the lock timeout) instead of failing."""
    service_file = terraform_project()
    infra = infra_step(service_file, "5.0.6")
    spec = infra.step.terraform
    assert spec is not None
    holder = by_hand_in(service_file, "staging", {"TF_VAR_app_version": "hand", "TF_VAR_delay": "2"})
    lock = state_folder(service_file, "staging") / ".terraform.tfstate.lock.info"

    async def plan_while_locked(runner: TerraformRunner) -> StepResult | ApplicationError:
        """Plan the step while a slow apply (a provisioner sleeping 2 s) holds the state lock."""
        applying = asyncio.create_task(holder.apply((await holder.plan("held.tfplan")).planfile))
        deadline = time.monotonic() + 20
        while not lock.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert lock.exists(), "the apply took no lock"
        try:
            return await ActivityEnvironment().run(runner.plan, infra, spec)
        except ApplicationError as exc:
            return exc
        finally:
            await applying

    impatient = run(plan_while_locked(TerraformRunner(lock_timeout=timedelta(0))))
    assert isinstance(impatient, ApplicationError) and impatient.type == "TerraformTransient"
    assert "Error acquiring the state lock" in str(impatient)

    # Replacing "db" runs its slow provisioner again, under the lock.
    subprocess.run([holder.binary, "taint", "terraform_data.db"], cwd=holder.workdir, env=terraform_env(holder.env))
    planned = run(plan_while_locked(TerraformRunner()))  # the default lock timeout
    assert isinstance(planned, StepResult), planned
    # Planned on the state the apply left (app "hand" -> "5.0.6", db replaced): it waited for it.
    assert planned.summary == "0 to add, 1 to change, 0 to destroy"
