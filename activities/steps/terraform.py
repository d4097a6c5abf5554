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
the worker's environment; neither is ever in history or logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from prodline.config.steps import TerraformStep
from prodline.contracts import NON_RETRYABLE_CONFIG, STALE_PLAN, StepResult, StepRun

from .. import terraform_tool as tf
from ..artifacts import default_store
from ..context import WorkerContext
from ..process import heartbeat_while, redact, run_process
from .base import StepRunner, approved_plan, publish_outputs

log = structlog.get_logger("prodline.steps.terraform")

# Terraform needs time to write state and release its lock after SIGINT.
CANCEL_GRACE = timedelta(seconds=60)


class _Workspace:
    """Everything one Terraform call needs, resolved from the step and the release."""

    def __init__(self, run: StepRun, spec: TerraformStep):
        ctx = WorkerContext(run.context)
        self.run, self.spec = run, spec
        self.workdir = ctx.workdir(spec.dir)
        self.workspace = ctx.render(spec.workspace)
        try:
            self.binary = tf.find_terraform(ctx.render(spec.binary) if spec.binary else None)
        except tf.TerraformNotFoundError as exc:
            raise ApplicationError(str(exc), type=NON_RETRYABLE_CONFIG, non_retryable=True) from None
        secrets = ctx.secret_values()
        self.masked = [*secrets.values(), *ctx.sensitive_values().values()]
        env = ctx.process_env(spec.env, secrets)
        env.update({f"TF_VAR_{name}": value for name, value in secrets.items()})
        data_dir = Path(os.environ.get("PRODLINE_TERRAFORM_DATA_DIR") or Path.home() / ".cache/prodline/terraform")
        env["TF_DATA_DIR"] = str(data_dir / hashlib.sha256(self.workdir.encode()).hexdigest()[:16] / self.workspace)
        env.pop("TF_WORKSPACE", None)  # we select the workspace; Terraform refuses to switch when this is set
        self.env = env
        self.variables: dict[str, Any] = {
            k: ctx.render(v) if isinstance(v, str) else v for k, v in spec.variables.items()
        }
        self.var_files = [ctx.render(f) for f in spec.var_files]

    def prepare(self) -> None:
        """init and workspace selection: idempotent, so safe on every attempt."""
        tf.init(self.binary, self.workdir, self.env, self.spec.backend_config or None)
        tf.select_workspace(self.binary, self.workdir, self.env, self.workspace)


def _failure(exc: tf.TerraformError, masked: list[str]) -> ApplicationError:
    message = redact(str(exc), masked)
    if isinstance(exc, tf.StalePlanError):
        return ApplicationError(
            f"the approved plan is stale: the state changed after it was made ({message})",
            type=STALE_PLAN,
            non_retryable=True,
        )
    if exc.kind == "config":
        return ApplicationError(message, type=NON_RETRYABLE_CONFIG, non_retryable=True)
    return ApplicationError(message, type="TerraformTransient")


async def _in_thread(func, masked: list[str]):
    """Run blocking Terraform calls in a thread, heartbeating; map their errors for Temporal.

    Cancelled (release cancelled, or the attempt timed out), the running Terraform
    gets SIGINT like Ctrl-C, and the cancellation completes once it has exited.
    """
    interrupter = tf.Interrupter()

    def in_thread():
        with interrupter.active():
            return func()

    stop = lambda: interrupter.interrupt(CANCEL_GRACE.total_seconds())  # noqa: E731
    try:
        return await heartbeat_while(asyncio.to_thread(in_thread), {"terraform": "running"}, on_cancel=stop)
    except tf.TerraformError as exc:
        raise _failure(exc, masked) from None


async def _applied_by_an_earlier_attempt(ws: _Workspace) -> bool:
    """On a retry, a "stale" plan may be this very plan, applied by an attempt that died
    before it could report success: the state moved on, to what was approved. Then
    nothing is left to change, and the step is done; anything else stays stale."""
    if activity.info().attempt == 1:
        return False
    drifted = await _in_thread(lambda: tf.drift(ws.binary, ws.workdir, ws.env, ws.variables, ws.var_files), ws.masked)
    return not drifted


class TerraformRunner(StepRunner[TerraformStep]):
    spec_type = TerraformStep

    async def plan(self, run: StepRun, spec: TerraformStep) -> StepResult:
        ws = _Workspace(run, spec)
        with tempfile.TemporaryDirectory(prefix="prodline-plan-") as folder:
            planfile = Path(folder) / "release.tfplan"

            def make_plan() -> tf.PlanSummary:
                ws.prepare()
                return tf.plan(ws.binary, ws.workdir, ws.env, ws.variables, ws.var_files, out=planfile, with_text=False)

            summary = await _in_thread(make_plan, ws.masked)
            key = run.artifact_key("plan.tfplan")
            digest = default_store().put(key, planfile.read_bytes())
        resources = "\n".join(f"{'/'.join(r['actions'])}: {r['address']}" for r in summary.resources)
        log.info("terraform.plan", release=run.context.release_id, environment=run.context.environment, step=run.step.name,
                 add=summary.add, change=summary.change, destroy=summary.destroy)  # fmt: skip
        return StepResult(
            summary=f"{summary.add} to add, {summary.change} to change, {summary.destroy} to destroy",
            output=redact(resources or "no resource changes", ws.masked),
            changed=summary.has_changes,
            artifact=key,
            digest=digest,
        )

    async def apply(self, run: StepRun, spec: TerraformStep) -> StepResult:
        ws = _Workspace(run, spec)
        data = approved_plan(run)
        await _in_thread(ws.prepare, ws.masked)
        completed = {"resources": 0}

        def count(line: str) -> None:
            if tf.parse_progress_line(line):
                completed["resources"] += 1

        with tempfile.TemporaryDirectory(prefix="prodline-apply-") as folder:
            planfile = Path(folder) / "approved.tfplan"
            planfile.write_bytes(data)
            argv = tf.apply_command(ws.binary, ws.workdir, planfile)
            result = await run_process(
                argv, cwd=ws.workdir, env=tf.terraform_env(ws.env), secrets=ws.masked,
                cancel_signal=signal.SIGINT, grace=CANCEL_GRACE, on_line=count, progress=lambda: dict(completed),
            )  # fmt: skip
        summary = f"applied: {completed['resources']} resource action(s) completed"
        try:
            tf.raise_for_apply(argv, result.exit_code, result.output, result.output)
        except tf.StalePlanError as exc:
            if not await _applied_by_an_earlier_attempt(ws):
                raise _failure(exc, ws.masked) from None
            summary = f"applied by attempt {activity.info().attempt - 1} or earlier (nothing left to change)"
            log.info("terraform.already_applied", release=run.context.release_id,
                     environment=run.context.environment, step=run.step.name, attempt=activity.info().attempt)  # fmt: skip
        except tf.TerraformError as exc:
            raise _failure(exc, ws.masked) from None
        found = await _in_thread(lambda: tf.outputs(ws.binary, ws.workdir, ws.env), ws.masked)
        values = {name: o["value"] for name, o in found.items()}
        visible, sensitive, key, masks = publish_outputs(run, values, {n for n, o in found.items() if o["sensitive"]})
        return StepResult(
            summary=summary,
            output=redact(result.tail(), ws.masked + masks),
            outputs=visible,
            sensitive_outputs=sensitive,
            outputs_key=key,
        )

    async def fetch(self, run: StepRun, spec: TerraformStep) -> StepResult:
        ws = _Workspace(run, spec)

        def check() -> bool:
            ws.prepare()
            return tf.drift(ws.binary, ws.workdir, ws.env, ws.variables, ws.var_files)

        drifted = await _in_thread(check, ws.masked)
        return StepResult(
            summary="live infrastructure differs from the configuration" if drifted else "in sync", changed=drifted
        )
