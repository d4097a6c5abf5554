"""The ``terraform`` step: plan before approval, then apply exactly that plan.

* **plan**: ``init``, select (or create) the workspace, ``plan -out``; the plan
  file goes to the artifact store (it can hold secrets), history gets its key,
  its SHA-256 and a summary (add / change / destroy, with addresses).
* **apply**: fetch the plan file, check its SHA-256 against the approved one,
  ``apply PLANFILE``. Terraform refuses a stale plan; that surfaces as a
  ``StalePlan`` error and the workflow re-plans (and asks again) or fails;
  unless this is a retry and nothing is left to change (an earlier attempt
  applied the plan and died before reporting it), which counts as applied.
  Progress (resources completed) goes into heartbeats; cancelling sends
  SIGINT, like Ctrl-C, so Terraform writes its state and releases the lock.
* **fetch**: ``plan -detailed-exitcode``: does live infrastructure differ?

Each workspace gets its own ``TF_DATA_DIR`` on the worker, so releases of one
module to several environments at once never share ``.terraform/``.
Secret parameters reach Terraform as ``TF_VAR_<name>``; credentials come from
the worker's environment; neither is ever in history or logs. Plans and
applies wait for a held state lock (``PRODLINE_TERRAFORM_LOCK_TIMEOUT`` on the
worker, default 2m), so a retry outlasts a cut-off attempt's Terraform unwinding.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from prodline.config.durations import parse_duration
from prodline.config.steps import TerraformStep
from prodline.contracts import NON_RETRYABLE_CONFIG, STALE_PLAN, StepResult, StepRun

from prodline.artifacts.store import ArtifactStore
from ..context import WorkerContext
from ..process import redact
from ..terraform import (
    DEFAULT_LOCK_TIMEOUT,
    StalePlanError,
    TerraformCli,
    TerraformError,
    TerraformNotFoundError,
    find_terraform,
)
from .base import StepRunner, applied, approved_plan_file, saved_plan, scratch_file

log = structlog.get_logger("prodline.steps.terraform")

LOCK_TIMEOUT_VARIABLE = "PRODLINE_TERRAFORM_LOCK_TIMEOUT"


def lock_timeout_from_env() -> timedelta:
    """How long plans and applies wait for a held state lock: the worker's setting, else the default."""
    value = os.environ.get(LOCK_TIMEOUT_VARIABLE)
    if not value:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ApplicationError(
            f"{LOCK_TIMEOUT_VARIABLE}={value!r} on the worker: {exc}", type=NON_RETRYABLE_CONFIG, non_retryable=True
        ) from None


class _TerraformCall:
    """Everything one step's Terraform commands need, resolved from the step and the release."""

    def __init__(self, run: StepRun, spec: TerraformStep, store: ArtifactStore | None, lock_timeout: timedelta):
        ctx = WorkerContext(run.context, store)
        self.spec = spec
        workdir = ctx.workdir(spec.dir)
        self.workspace = ctx.render(spec.workspace)
        try:
            binary = find_terraform(ctx.render(spec.binary) if spec.binary else None)
        except TerraformNotFoundError as exc:
            raise ApplicationError(str(exc), type=NON_RETRYABLE_CONFIG, non_retryable=True) from None
        secrets = ctx.secret_values()
        self.masked = [*secrets.values(), *ctx.sensitive_values().values()]
        env = ctx.process_env(spec.env, secrets)
        env.update({f"TF_VAR_{name}": value for name, value in secrets.items()})
        data_dir = Path(os.environ.get("PRODLINE_TERRAFORM_DATA_DIR") or Path.home() / ".cache/prodline/terraform")
        env["TF_DATA_DIR"] = str(data_dir / hashlib.sha256(workdir.encode()).hexdigest()[:16] / self.workspace)
        env.pop("TF_WORKSPACE", None)  # we select the workspace; Terraform refuses to switch when this is set
        self.cli = TerraformCli(binary, workdir, env, self.masked, lock_timeout)
        self.variables: dict[str, Any] = {
            k: ctx.render(v) if isinstance(v, str) else v for k, v in spec.variables.items()
        }
        self.var_files = [ctx.render(f) for f in spec.var_files]

    async def prepare(self) -> None:
        """init and workspace selection: idempotent, so safe on every attempt."""
        await self.cli.init(self.spec.backend_config or None)
        await self.cli.select_workspace(self.workspace)

    async def drifted(self) -> bool:
        return await self.cli.drift(self.variables, self.var_files)

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """Terraform's errors as Temporal sees them: stale plan, configuration (no retry), or transient."""
        try:
            yield
        except StalePlanError as exc:
            raise ApplicationError(
                f"the approved plan is stale: the state changed after it was made ({redact(str(exc), self.masked)})",
                type=STALE_PLAN,
                non_retryable=True,
            ) from None
        except TerraformError as exc:
            message = redact(str(exc), self.masked)
            if exc.kind == "config":
                raise ApplicationError(message, type=NON_RETRYABLE_CONFIG, non_retryable=True) from None
            raise ApplicationError(message, type="TerraformTransient") from None


class TerraformRunner(StepRunner[TerraformStep]):
    spec_type = TerraformStep

    def __init__(self, store: ArtifactStore | None = None, lock_timeout: timedelta | None = None):
        self.store = store  # None: the default store, looked up when a step runs
        self.lock_timeout = lock_timeout  # None: the worker's PRODLINE_TERRAFORM_LOCK_TIMEOUT, else 2m

    def _call(self, run: StepRun, spec: TerraformStep) -> _TerraformCall:
        lock_timeout = self.lock_timeout if self.lock_timeout is not None else lock_timeout_from_env()
        return _TerraformCall(run, spec, self.store, lock_timeout)

    async def plan(self, run: StepRun, spec: TerraformStep) -> StepResult:
        call = self._call(run, spec)
        with call.failures(), scratch_file("plan.tfplan") as planfile:
            await call.prepare()
            summary = await call.cli.plan(planfile, call.variables, call.var_files)
            resources = "\n".join(f"{'/'.join(r['actions'])}: {r['address']}" for r in summary.resources)
            log.info(
                "terraform.plan",
                release=run.context.release_id,
                environment=run.context.environment,
                step=run.step.name,
                add=summary.add,
                change=summary.change,
                destroy=summary.destroy,
            )
            return saved_plan(
                run,
                self.store,
                planfile,
                summary=f"{summary.add} to add, {summary.change} to change, {summary.destroy} to destroy",
                output=redact(resources or "no resource changes", call.masked),
                changed=summary.has_changes,
            )

    async def apply(self, run: StepRun, spec: TerraformStep) -> StepResult:
        call = self._call(run, spec)
        with call.failures(), approved_plan_file(run, self.store, "approved.tfplan") as planfile:
            await call.prepare()
            try:
                result = await call.cli.apply(planfile)
                summary, output = f"applied: {result.completed} resource action(s) completed", result.output
            except StalePlanError as exc:
                if not await self._applied_by_an_earlier_attempt(call):
                    raise
                summary, output = (
                    f"applied by attempt {activity.info().attempt - 1} or earlier (nothing left to change)",
                    exc.output,
                )
                log.info(
                    "terraform.already_applied",
                    release=run.context.release_id,
                    environment=run.context.environment,
                    step=run.step.name,
                    attempt=activity.info().attempt,
                )
            found = await call.cli.outputs()
        return applied(
            run,
            self.store,
            summary=summary,
            output="\n".join(output.splitlines()[-20:]),
            values={name: o["value"] for name, o in found.items()},
            sensitive={name for name, o in found.items() if o["sensitive"]},
            masked=call.masked,
        )

    @staticmethod
    async def _applied_by_an_earlier_attempt(call: _TerraformCall) -> bool:
        """On a retry, a "stale" plan may be this very plan, applied by an attempt that died
        before it could report success: the state moved on, to what was approved. Then
        nothing is left to change, and the step is done; anything else stays stale."""
        return activity.info().attempt > 1 and not await call.drifted()

    async def fetch(self, run: StepRun, spec: TerraformStep) -> StepResult:
        call = self._call(run, spec)
        with call.failures():
            await call.prepare()
            drifted = await call.drifted()
        return StepResult(
            summary="live infrastructure differs from the configuration" if drifted else "in sync", changed=drifted
        )
