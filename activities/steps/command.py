"""The ``command`` step: the user's own scripts for apply, plan and fetch."""

from __future__ import annotations

import structlog
from temporalio.exceptions import ApplicationError

from prodline.config.steps import CommandStep
from prodline.contracts import StepResult, StepRun

from ..context import WorkerContext
from ..process import failure_message, run_process
from .base import StepRunner

log = structlog.get_logger("prodline.steps.command")

FETCH_DRIFT = 2


class CommandRunner(StepRunner[CommandStep]):
    spec_type = CommandStep

    async def apply(self, run: StepRun, spec: CommandStep) -> StepResult:
        if run.restoring and spec.rollback:  # re-deploying a verified version: the service's own way back
            return await self._run(run, spec, spec.rollback, "rollback")
        return await self._run(run, spec, spec.apply, "apply")

    async def plan(self, run: StepRun, spec: CommandStep) -> StepResult:
        if spec.plan is None:
            return StepResult(summary="no plan command")
        return await self._run(run, spec, spec.plan, "plan")

    async def fetch(self, run: StepRun, spec: CommandStep) -> StepResult:
        if spec.fetch is None:
            return StepResult(summary="no fetch command")
        return await self._run(run, spec, spec.fetch, "fetch", ok_codes=(0, FETCH_DRIFT))

    async def _run(
        self, run: StepRun, spec: CommandStep, template: str, action: str, ok_codes: tuple[int, ...] = (0,)
    ) -> StepResult:
        ctx = WorkerContext(run.context)
        secrets = ctx.secret_values()
        masked = [*secrets.values(), *ctx.sensitive_values().values()]
        command = ctx.render(template)
        bound = log.bind(
            release=run.context.release_id, environment=run.context.environment, step=run.step.name, action=action
        )
        bound.info("command.start")
        result = await run_process(
            command,
            cwd=ctx.workdir(spec.workdir),
            env=ctx.process_env(spec.env, secrets),
            secrets=masked,
        )
        bound.info("command.exit", exit_code=result.exit_code)
        if result.exit_code in ok_codes:
            drifted = result.exit_code == FETCH_DRIFT
            return StepResult(
                summary=("drifted" if drifted else "in sync") if action == "fetch" else "",
                output=result.tail(),
                changed=drifted if action == "fetch" else None,
            )
        raise ApplicationError(
            failure_message(command, result, masked),
            {"exit_code": result.exit_code},
            type="CommandFailed",
            non_retryable=result.exit_code not in spec.retryable_exit_codes,
        )
