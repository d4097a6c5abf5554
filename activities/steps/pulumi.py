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
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from temporalio.exceptions import ApplicationError

from prodline.artifacts.store import ArtifactStore
from prodline.config.steps import PulumiStep
from prodline.contracts import NON_RETRYABLE_CONFIG, STALE_PLAN, StepResult, StepRun

from ..context import WorkerContext
from ..process import heartbeat_while, redact
from .base import StepRunner, applied, approved_plan_file, saved_plan, scratch_file


def _automation() -> ModuleType:
    """``pulumi.automation``, an optional dependency: imported by name when a pulumi step runs, so
    workers without it start (and type-check) fine; its API is used untyped."""
    try:
        return importlib.import_module("pulumi.automation")
    except ImportError:
        raise ApplicationError(
            "the pulumi step needs the Pulumi SDK (`pip install prodline[pulumi]`) and the pulumi CLI on the worker",
            type=NON_RETRYABLE_CONFIG,
            non_retryable=True,
        ) from None


class _Stack:
    def __init__(self, run: StepRun, spec: PulumiStep, store: ArtifactStore | None):
        auto = _automation()
        ctx = WorkerContext(run.context, store)
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

    async def call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
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

    def __init__(self, store: ArtifactStore | None = None):
        self.store = store  # None: the default store, looked up when a step runs

    async def plan(self, run: StepRun, spec: PulumiStep) -> StepResult:
        stack = await asyncio.to_thread(_Stack, run, spec, self.store)
        with scratch_file("pulumi-plan.json") as planfile:
            result = await stack.call(stack.stack.preview, plan=str(planfile))
            summary = _summary(result.change_summary)
            return saved_plan(
                run,
                self.store,
                planfile,
                summary=summary,
                output=redact(result.stdout[-4000:], stack.masked),
                changed=summary != "no changes",
            )

    async def apply(self, run: StepRun, spec: PulumiStep) -> StepResult:
        with approved_plan_file(run, self.store, "pulumi-plan.json") as planfile:
            stack = await asyncio.to_thread(_Stack, run, spec, self.store)
            result = await stack.call(stack.stack.up, plan=str(planfile))
        return applied(
            run,
            self.store,
            summary=f"up: {_summary(result.summary.resource_changes)}",
            output=result.stdout[-4000:],
            values={name: out.value for name, out in result.outputs.items()},
            sensitive={name for name, out in result.outputs.items() if out.secret},
            masked=stack.masked,
        )

    async def fetch(self, run: StepRun, spec: PulumiStep) -> StepResult:
        stack = await asyncio.to_thread(_Stack, run, spec, self.store)
        result = await stack.call(stack.stack.preview)
        summary = _summary(result.change_summary)
        drifted = summary != "no changes"
        return StepResult(
            summary="live infrastructure differs from the stack" if drifted else "in sync", changed=drifted
        )
