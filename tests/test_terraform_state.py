"""Terraform state outlives the folder a step ran in: every attempt works in a new copy of the code.

With release bundles each attempt of a step gets its own throwaway copy of the service's
folder (a new temp dir, maybe on another worker). Here each call copies the module into a
new folder, as the worker does, and the copy is deleted once the call returns; the plan made
in one copy is applied in another. Local state must then live in the worker's data dir, keyed
by application, service, environment and step; a module with its own backend keeps it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from prodline.activities.steps import apply_step, plan_step
from prodline.activities.steps.terraform import local_state_dir
from prodline.activities.terraform import (
    OVERRIDE_FILE,
    Backend,
    TerraformCli,
    declared_backend,
    embedded_terraform_binary,
    local_state_override,
)
from prodline.activities.workspace import shared_store
from prodline.artifacts.bundle import pack, upload
from prodline.config.steps import Step, TerraformStep
from prodline.contracts import NON_RETRYABLE_CONFIG, ReleaseRef, RunContext, StepResult, StepRun

from conftest import run

MODULE = """
variable "app_version" { type = string }
resource "terraform_data" "app" {
  input = var.app_version
}
resource "terraform_data" "db" {
  input = "db-${terraform.workspace}"
}
output "url" {
  value = "https://${terraform.workspace}.shop.test/${var.app_version}"
}
"""


class Attempts:
    """One module, run as the worker runs it: every call in a new copy, deleted afterwards."""

    def __init__(self, root: Path, binary: str, module: str = MODULE, **spec: object):
        self.root, self.application = root, f"shop-{uuid.uuid4().hex[:6]}"
        self.source = root / "source"
        (self.source / "infra").mkdir(parents=True)
        (self.source / "infra" / "main.tf").write_text(textwrap.dedent(module))
        fields: dict[str, object] = {"dir": "infra", "binary": binary, "variables": {"app_version": "{{ version }}"}}
        self.step = Step(name="infra", terraform=TerraformStep.model_validate({**fields, **spec}))
        self.copies: list[Path] = []

    def _copy(self) -> Path:
        copy = self.root / f"attempt-{len(self.copies) + 1}"
        shutil.copytree(self.source, copy)
        self.copies.append(copy)
        return copy

    def _call(self, activity: Callable, version: str, environment: str, plan: StepResult | None) -> StepResult:
        copy = self._copy()
        context = self.context(copy, version, environment)
        try:
            return asyncio.run(ActivityEnvironment().run(activity, StepRun(context=context, step=self.step, plan=plan)))
        finally:
            assert not (copy / "infra" / OVERRIDE_FILE).exists(), "prodline left its override in the folder"
            leftovers = [p.name for p in copy.rglob("*") if p.name.startswith("terraform.tfstate")]
            assert not leftovers, f"state was written into the copy: {leftovers}"
            shutil.rmtree(copy)  # the worker throws the copy away

    def context(self, base_dir: Path, version: str, environment: str) -> RunContext:
        """What the workflow hands the step's activity (no bundle: ``base_dir`` is absolute)."""
        return RunContext(
            **ReleaseRef.of(self.application, "checkout", version),
            environment=environment,
            base_dir=str(base_dir),
            run_id=f"run-{version}",
        )

    def plan(self, version: str, environment: str = "staging") -> StepResult:
        return self._call(plan_step, version, environment, None)

    def apply(self, planned: StepResult, version: str, environment: str = "staging") -> StepResult:
        return self._call(apply_step, version, environment, planned)

    def release(self, version: str, environment: str = "staging") -> StepResult:
        """Plan in one copy, apply that plan in another."""
        return self.apply(self.plan(version, environment), version, environment)

    def state(self, environment: str = "staging", workspace: str | None = None) -> dict[str, object]:
        """The resources' inputs in the step's state on this worker."""
        folder = local_state_dir(self.application, "checkout", environment, "infra")
        workspace = environment if workspace is None else workspace
        file = (
            folder / "terraform.tfstate"
            if workspace == "default"
            else folder / "workspaces" / workspace / "terraform.tfstate"
        )
        return inputs(json.loads(file.read_text()))


def inputs(state: dict) -> dict[str, object]:
    return {r["name"]: r["instances"][0]["attributes"]["input"]["value"] for r in state["resources"]}


BINARIES = {
    "embedded": embedded_terraform_binary,
    # The user's own Terraform (an older one, 1.11 here): `binary: terraform` finds it on PATH.
    "terraform on PATH": lambda: shutil.which("terraform") and "terraform",
}


@pytest.fixture(params=list(BINARIES))
def binary(request) -> str:
    found = BINARIES[request.param]()
    if not found:
        pytest.skip("no terraform on PATH")
    return found


def test_state_outlives_the_copy_a_plan_was_applied_in(tmp_path, binary):
    step = Attempts(tmp_path, binary)
    planned = step.plan("1.0.0")  # copy 1, deleted before the apply
    assert planned.summary == "2 to add, 0 to change, 0 to destroy"
    applied = step.apply(planned, "1.0.0")  # copy 2
    assert applied.outputs == {"url": "https://staging.shop.test/1.0.0"}
    assert step.state() == {"app": "1.0.0", "db": "db-staging"}

    # The next release plans in copy 3: it sees what copy 2 applied.
    again = step.plan("1.0.0")
    assert (again.summary, again.changed) == ("0 to add, 0 to change, 0 to destroy", False)
    newer = step.plan("1.1.0")
    assert newer.summary == "0 to add, 1 to change, 0 to destroy"
    assert newer.output == "update: terraform_data.app"
    step.apply(newer, "1.1.0")
    assert step.state() == {"app": "1.1.0", "db": "db-staging"}


def test_each_environment_keeps_its_own_state(tmp_path):
    step = Attempts(tmp_path, embedded_terraform_binary())
    step.release("2.0.0", "staging")
    step.release("1.9.0", "production")
    assert step.state("staging") == {"app": "2.0.0", "db": "db-staging"}
    assert step.state("production") == {"app": "1.9.0", "db": "db-production"}
    assert step.plan("1.9.0", "production").changed is False
    assert step.plan("1.9.0", "staging").summary == "0 to add, 1 to change, 0 to destroy"


def test_environments_sharing_a_workspace_name_still_keep_separate_state(tmp_path):
    """`workspace: default` in every environment: the environment in the key keeps them apart."""
    step = Attempts(tmp_path, embedded_terraform_binary(), workspace="default")
    step.release("3.0.0", "staging")
    planned = step.plan("3.0.0", "production")
    assert planned.summary == "2 to add, 0 to change, 0 to destroy"  # production's state is its own
    step.apply(planned, "3.0.0", "production")
    assert (
        step.state("staging", "default")
        == step.state("production", "default")
        == {
            "app": "3.0.0",
            "db": "db-default",
        }
    )


def test_a_module_whose_backend_names_absolute_paths_keeps_its_state_there(tmp_path):
    own = tmp_path / "their-state"
    backend = (
        f'terraform {{\n  backend "local" {{\n    path = "{own}/x.tfstate"\n    workspace_dir = "{own}/ws"\n  }}\n}}\n'
    )
    step = Attempts(tmp_path, embedded_terraform_binary(), module=backend + MODULE)
    # An override of ours left in the code (a worker killed mid-step in the service's own folder,
    # then the folder bundled) must not take the module's backend over.
    stale = local_state_override(Backend("local"), tmp_path / "somewhere-else")
    assert stale is not None
    (step.source / "infra" / OVERRIDE_FILE).write_text(stale)
    step.release("4.0.0")
    assert inputs(json.loads((own / "ws/staging/terraform.tfstate").read_text()))["app"] == "4.0.0"
    assert not local_state_dir(step.application, "checkout", "staging", "infra").exists()
    assert not (tmp_path / "somewhere-else").exists()


def test_the_demo_way_of_placing_state_still_wins(tmp_path):
    """`-backend-config` at init (the demo passes workspace_dir through TF_CLI_ARGS_init) beats the override."""
    chosen = tmp_path / "chosen"
    step = Attempts(
        tmp_path,
        embedded_terraform_binary(),
        module='terraform {\n  backend "local" {}\n}\n' + MODULE,
        env={"TF_CLI_ARGS_init": f"-backend-config=workspace_dir={chosen}"},
    )
    step.release("4.1.0")
    assert inputs(json.loads((chosen / "staging/terraform.tfstate").read_text()))["app"] == "4.1.0"
    assert not (local_state_dir(step.application, "checkout", "staging", "infra") / "workspaces").exists()


def test_a_service_folder_that_already_holds_state_keeps_it(tmp_path):
    """A release started before bundles runs in the service's own folder, where its state is:
    it must finish against that state, not start over in the data dir."""
    step = Attempts(tmp_path, embedded_terraform_binary())
    infra = str(step.source / "infra")
    by_hand = TerraformCli(embedded_terraform_binary(), infra, {"TF_DATA_DIR": str(tmp_path / "by-hand")})

    async def apply_by_hand() -> None:
        await by_hand.init()
        await by_hand.select_workspace("staging")
        await by_hand.apply((await by_hand.plan("by-hand.tfplan", {"app_version": "0.9.0"})).planfile)

    run(apply_by_hand())
    context = step.context(step.source, "0.9.0", "staging")
    planned = asyncio.run(ActivityEnvironment().run(plan_step, StepRun(context=context, step=step.step)))
    assert planned.changed is False  # it saw the folder's state
    assert not (step.source / "infra" / OVERRIDE_FILE).exists()
    assert not local_state_dir(step.application, "checkout", "staging", "infra").exists()


# --- which backend a module declares ------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"main.tf": MODULE}, ("local", {})),
        (
            {"main.tf": 'terraform {\n  backend "local" { path = "rel.tfstate" }\n}\n'},
            ("local", {"path": "rel.tfstate"}),
        ),
        (
            {
                "main.tf": textwrap.dedent(
                    """
                    # terraform { backend "local" {} }
                    /* terraform {
                      backend "gcs" {}
                    } */
                    locals {
                      script = <<-EOT
                        terraform {
                          backend "http" {}
                        }
                      EOT
                      braces = "${jsonencode({ a = "}" })}"
                    }
                    terraform {
                      required_providers {
                        aws = { source = "hashicorp/aws" }
                      }
                      backend "s3" { // shared by every worker
                        bucket    = "acme-state"
                        endpoints = { s3 = "http://127.0.0.1:9000" }
                        key       = "checkout.tfstate"
                      }
                    }
                    """
                )
            },
            ("s3", {"bucket": "acme-state", "key": "checkout.tfstate"}),
        ),
        (
            {"main.tf": 'terraform {\n  cloud {\n    organization = "acme"\n  }\n}\n'},
            ("cloud", {"organization": "acme"}),
        ),
        ({"main.tf.json": json.dumps({"terraform": {"backend": {"s3": {"bucket": "b"}}}})}, ("s3", {"bucket": "b"})),
        # An override file replaces the backend of the primary files, as in Terraform.
        (
            {
                "main.tf": 'terraform {\n  backend "s3" {}\n}\n',
                "dev_override.tf": 'terraform {\n  backend "local" {}\n}\n',
            },
            ("local", {}),
        ),
        (
            {"main.tf": MODULE, ".#main.tf": 'terraform {\n  backend "s3" {}\n}\n'},
            ("local", {}),
        ),  # an editor's lock file
    ],
    ids=["none", "local-relative", "s3-among-lookalikes", "cloud", "json", "override-file", "hidden-file"],
)
def test_the_declared_backend_is_found_as_terraform_reads_the_files(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    backend = declared_backend(tmp_path)
    assert (backend.name, dict(backend.settings)) == expected


# --- the S3 backend: several workers, one object store ------------------------------------


def test_an_s3_backend_shares_state_between_workers_through_the_object_store(tmp_path, s3_server, monkeypatch):
    """Three workers with their own disks: one plans, another applies, a third sees the state."""
    bucket, prefix = s3_server.url.removeprefix("s3://").split("/", 1)
    key = f"{prefix}/{uuid.uuid4().hex[:6]}/checkout/infra.tfstate"
    backend = s3_server.terraform_backend(key)
    step = Attempts(tmp_path, embedded_terraform_binary(), module=backend + MODULE)
    for name, value in s3_server.env.items():  # credentials come from the worker's environment
        monkeypatch.setenv(name, value)

    def worker(name: str) -> None:
        monkeypatch.setenv("PRODLINE_TERRAFORM_DATA_DIR", str(tmp_path / name))

    worker("worker-1")
    planned = step.plan("5.0.0")
    worker("worker-2")
    step.apply(planned, "5.0.0")
    worker("worker-3")
    assert step.plan("5.0.0").changed is False
    assert step.plan("5.1.0").summary == "0 to add, 1 to change, 0 to destroy"

    s3 = s3_server.client()
    stored = s3.get_object(Bucket=bucket, Key=f"env:/staging/{key}")["Body"].read()  # one object per workspace
    assert inputs(json.loads(stored)) == {"app": "5.0.0", "db": "db-staging"}
    assert not list(tmp_path.glob("worker-*/state")), "an S3 module's state must not be redirected"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="env:/staging/" + key).get("Contents", [])
    assert [o["Key"] for o in listed] == [f"env:/staging/{key}"]  # every lock was released

    # The lock is real: SeaweedFS refuses a second create of the lock object (If-None-Match),
    # so a plan while another Terraform holds it waits, then fails, and names the lock.
    s3.put_object(Bucket=bucket, Key=f"env:/staging/{key}.tflock", Body=b'{"ID": "held-by-another-worker"}')
    monkeypatch.setenv("PRODLINE_TERRAFORM_LOCK_TIMEOUT", "1s")
    with pytest.raises(ApplicationError) as locked:
        step.plan("5.1.0")
    assert locked.value.type == "TerraformTransient" and "Error acquiring the state lock" in str(locked.value)


# --- through a real bundle: the worker's own copies -----------------------------------------


def test_a_bundled_module_plans_in_one_copy_and_applies_in_another(tmp_path):
    """The real path: the service folder packed and uploaded, each activity in its own copy of it."""
    step = Attempts(tmp_path, embedded_terraform_binary())
    with pack(step.source) as packed:
        upload(packed, shared_store())

    def call(activity: Callable, version: str, plan: StepResult | None = None, spec: Step = step.step) -> StepResult:
        context = step.context(Path("."), version, "staging").model_copy(update={"bundle": packed.ref})
        return asyncio.run(ActivityEnvironment().run(activity, StepRun(context=context, step=spec, plan=plan)))

    call(apply_step, "6.0.0", call(plan_step, "6.0.0"))
    assert step.state() == {"app": "6.0.0", "db": "db-staging"}
    assert call(plan_step, "6.0.0").changed is False

    # A relative local path from backend_config would put the state in the copy: refused, saying why.
    spec = step.step.terraform
    assert spec is not None
    relative = step.step.model_copy(
        update={"terraform": spec.model_copy(update={"backend_config": {"path": "own.tfstate"}})}
    )
    with pytest.raises(ApplicationError) as refused:
        call(plan_step, "6.0.0", spec=relative)
    assert refused.value.type == NON_RETRYABLE_CONFIG
    assert "backend_config path='own.tfstate' is a relative path" in str(refused.value)
