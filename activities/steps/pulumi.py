"""The ``pulumi`` step, through Pulumi's Automation API (``pulumi.automation``).

* **plan**: ``preview`` with an update plan saved to a file (``--save-plan``);
  the file goes to the artifact store, history gets its key, SHA-256 and the
  change summary.
* **apply**: ``up`` constrained to exactly that plan (``--plan``); outputs
  marked secret stay out of history, like Terraform's sensitive outputs.
* **fetch**: ``preview``: drift when it would change anything.
* Cancelling sends Pulumi's own cancel for the stack, then lets ``up`` unwind.

Not exercised on these machines: the Pulumi CLI cannot be installed here, so
only what does not need it is tested (config, errors, plan bookkeeping). It
needs ``pip install prodline[pulumi]`` and the ``pulumi`` CLI on the worker.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from temporalio.exceptions import ApplicationError

from prodline.config.steps import PulumiStep
from prodline.contracts import NON_RETRYABLE_CONFIG, STALE_PLAN, StepResult, StepRun

from ..artifacts import default_store
from ..context import WorkerContext
from ..process import heartbeat_while, redact
from .base import StepRunner, approved_plan, publish_outputs


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
    def __init__(self, run: StepRun, spec: PulumiStep):
        auto = _automation()
        ctx = WorkerContext(run.context)
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
        """Run a blocking Automation API call in a thread; heartbeat; cancel the stack's update when asked."""
        auto = _automation()
        try:
            return await heartbeat_while(asyncio.to_thread(method, **kwargs), {"pulumi": "running"}, self.stack.cancel)
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


class PulumiRunner(StepRunner[PulumiStep]):
    spec_type = PulumiStep

    async def plan(self, run: StepRun, spec: PulumiStep) -> StepResult:
        stack = await asyncio.to_thread(_Stack, run, spec)
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

    async def apply(self, run: StepRun, spec: PulumiStep) -> StepResult:
        data = approved_plan(run)
        stack = await asyncio.to_thread(_Stack, run, spec)
        with tempfile.TemporaryDirectory(prefix="prodline-pulumi-") as folder:
            planfile = Path(folder) / "plan.json"
            planfile.write_bytes(data)
            result = await stack.call(stack.stack.up, plan=str(planfile))
        values = {name: out.value for name, out in result.outputs.items()}
        visible, secret, key, masks = publish_outputs(
            run, values, {n for n, out in result.outputs.items() if out.secret}
        )
        return StepResult(
            summary=f"up: {_summary(result.summary.resource_changes)}",
            output=redact(result.stdout[-4000:], stack.masked + masks),
            outputs=visible,
            sensitive_outputs=secret,
            outputs_key=key,
        )

    async def fetch(self, run: StepRun, spec: PulumiStep) -> StepResult:
        stack = await asyncio.to_thread(_Stack, run, spec)
        result = await stack.call(stack.stack.preview)
        summary = _summary(result.change_summary)
        drifted = summary != "no changes"
        return StepResult(
            summary="live infrastructure differs from the stack" if drifted else "in sync", changed=drifted
        )
