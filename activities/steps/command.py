"""The ``command`` step: the user's own scripts for apply, plan and fetch."""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from temporalio.exceptions import ApplicationError

from prodline.config.steps import CommandStep
from prodline.contracts import StepResult, StepRun

from ..context import WorkerContext
from ..process import ProcessResult, redact, run_process
from .base import StepRunner

log = structlog.get_logger("prodline.steps.command")

# `sh` answers 126/127 when a command cannot run at all: retrying won't help. In a script
# that may be any of its lines, so the reason says what the code means, and the output which.
_CANNOT_RUN = {126: " (not executable)", 127: " (command not found)"}
FETCH_DRIFT = 2
# How much of a failed command its failure reason shows.
BRIEF_WIDTH = 60


class CommandRunner(StepRunner[CommandStep]):
    spec_type = CommandStep

    async def apply(self, run: StepRun, spec: CommandStep) -> StepResult:
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


def failure_message(command: str, result: ProcessResult, masked: Iterable[str]) -> str:
    """Why a command failed, in one reason: the command named briefly, its exit code, its output's tail.

    A multi-line script would bury the error under itself, so only its first line is shown.
    The command line may hold rendered secrets (an earlier step's sensitive output), so it is
    masked before it is cut: a secret split by the cut would escape the mask.
    """
    shown = brief(redact(command, masked))
    message = f"`{shown}` exited with code {result.exit_code}{_CANNOT_RUN.get(result.exit_code, '')}"
    tail = result.tail(10)
    return f"{message}: {tail}" if tail else message


def brief(command: str, width: int = BRIEF_WIDTH) -> str:
    """The command's first line, at most ``width`` characters, ending in "…" when anything was left out."""
    lines = command.strip().splitlines() or [""]
    first = lines[0].strip()
    if len(lines) == 1 and len(first) <= width:
        return first
    return first[:width].rstrip() + "…"
