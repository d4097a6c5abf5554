"""The ``pulumi`` step, through Pulumi's Automation API (``pulumi.automation``).

* **plan**: ``preview`` with an update plan saved to a file (``--save-plan``);
  the file goes to the artifact store, history gets its key, SHA-256 and the
  change summary.
* **apply**: ``up`` constrained to exactly that plan (``--plan``); outputs
  marked secret stay out of history, like Terraform's sensitive outputs.
* **fetch**: ``preview`` with ``expect_no_changes``: drift when it fails.
* Cancelling sends Pulumi's own cancel for the stack, then lets ``up`` unwind.

Not exercised on these machines: the Pulumi CLI cannot be installed here, so
only what does not need it is tested (config, errors, plan bookkeeping). It
needs ``pip install prodline[pulumi]`` and the ``pulumi`` CLI on the worker.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from prodline.config.steps import PulumiStep

from ..artifacts import ArtifactMissing, default_store, sha256
from ..context import NON_RETRYABLE_CONFIG, STALE_PLAN
from ..process import redact
from .base import StepResult, StepRun


def _automation():
    try:
        from pulumi import automation
    except ImportError:
        raise ApplicationError(
            "the pulumi step needs the Pulumi SDK (`pip install prodline[pulumi]`) and the pulumi CLI on the worker",
            type=NON_RETRYABLE_CONFIG,
            non_retryable=True,
        ) from None
    return automation


class _Stack:
    def __init__(self, run: StepRun):
        auto = _automation()
        spec: PulumiStep = run.step.pulumi  # type: ignore[assignment]
        ctx = run.context
        secrets = ctx.secret_values()
        self.masked = [*secrets.values(), *ctx.sensitive_values().values()]
        env = ctx.process_env(spec.env, secrets)
        if spec.backend_url:
            env["PULUMI_BACKEND_URL"] = ctx.render(spec.backend_url)
        workdir = ctx.workdir(spec.dir)
        try:
            self.stack = auto.create_or_select_stack(
                stack_name=ctx.render(spec.stack),
                work_dir=workdir,
                opts=auto.LocalWorkspaceOptions(work_dir=workdir, env_vars=env),
            )
            config = {k: auto.ConfigValue(value=ctx.render(v)) for k, v in spec.config.items()}
            for key, param in spec.secret_config.items():
                if param not in secrets:
                    raise ApplicationError(
                        f"secret_config {key!r} names {param!r}, which is not a secret parameter",
                        type=NON_RETRYABLE_CONFIG,
                        non_retryable=True,
                    )
                config[key] = auto.ConfigValue(value=secrets[param], secret=True)
            self.stack.set_all_config(config)
        except auto.CommandError as exc:
            raise ApplicationError(
                redact(str(exc), self.masked), type=NON_RETRYABLE_CONFIG, non_retryable=True
            ) from None

    async def call(self, method, **kwargs):
        """Run a blocking Automation API call in a thread; heartbeat; cancel the stack when asked."""
        auto = _automation()
        task = asyncio.ensure_future(asyncio.to_thread(method, **kwargs))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=2)
                if done:
                    return task.result()
                if activity.in_activity():
                    activity.heartbeat({"pulumi": "running"})
        except asyncio.CancelledError:
            await asyncio.to_thread(self.stack.cancel)
            await asyncio.wait({task}, timeout=60)
            raise
        except auto.ConcurrentUpdateError as exc:
            raise ApplicationError(redact(str(exc), self.masked), type="PulumiConcurrentUpdate") from None
        except auto.CommandError as exc:
            message = redact(str(exc), self.masked)
            if "plan" in message.lower() and "constraint" in message.lower():
                raise ApplicationError(
                    f"the approved plan no longer applies: {message}", type=STALE_PLAN, non_retryable=True
                ) from None
            raise ApplicationError(message, type=NON_RETRYABLE_CONFIG, non_retryable=True) from None


def _summary(changes: dict) -> str:
    counts = {str(k).split(".")[-1].lower(): v for k, v in (changes or {}).items()}
    return ", ".join(f"{v} to {k}" for k, v in sorted(counts.items()) if k != "same" and v) or "no changes"


class PulumiRunner:
    async def plan(self, run: StepRun) -> StepResult:
        stack = _Stack(run)
        with tempfile.TemporaryDirectory(prefix="prodline-pulumi-") as folder:
            planfile = Path(folder) / "plan.json"
            result = await stack.call(stack.stack.preview, plan=str(planfile))
            key = run.artifact_key("pulumi-plan.json")
            digest = default_store().put(key, planfile.read_bytes())
        summary = _summary(result.change_summary)
        return StepResult(
            summary=summary,
            output=redact(result.stdout[-4000:], stack.masked),
            changed=summary != "no changes",
            artifact=key,
            digest=digest,
        )

    async def apply(self, run: StepRun) -> StepResult:
        planned = run.plan
        if planned is None or not planned.artifact or not planned.digest:
            raise ApplicationError(
                "a pulumi step is applied only from its approved plan", type=NON_RETRYABLE_CONFIG, non_retryable=True
            )
        try:
            data = default_store().get(planned.artifact)
        except ArtifactMissing as exc:
            raise ApplicationError(
                f"the approved plan is not available on this worker: {exc}", type=STALE_PLAN, non_retryable=True
            ) from None
        if sha256(data) != planned.digest:
            raise ApplicationError(
                "the stored plan differs from the approved one (checksum mismatch)", type=STALE_PLAN, non_retryable=True
            )
        stack = _Stack(run)
        with tempfile.TemporaryDirectory(prefix="prodline-pulumi-") as folder:
            planfile = Path(folder) / "plan.json"
            planfile.write_bytes(data)
            result = await stack.call(stack.stack.up, plan=str(planfile))
        values = {name: out.value for name, out in result.outputs.items()}
        secret = sorted(name for name, out in result.outputs.items() if out.secret)
        key = run.artifact_key("outputs.json")
        default_store().put(key, json.dumps(values, default=str).encode())
        masked = stack.masked + [str(values[n]) for n in secret]
        return StepResult(
            summary=f"up: {_summary(result.summary.resource_changes)}",
            output=redact(result.stdout[-4000:], masked),
            outputs={
                n: v if isinstance(v, str) else json.dumps(v, default=str) for n, v in values.items() if n not in secret
            },
            sensitive_outputs=secret,
            outputs_key=key,
        )

    async def fetch(self, run: StepRun) -> StepResult:
        stack = _Stack(run)
        result = await stack.call(stack.stack.preview)
        summary = _summary(result.change_summary)
        drifted = summary != "no changes"
        return StepResult(
            summary="live infrastructure differs from the stack" if drifted else "in sync", changed=drifted
        )
