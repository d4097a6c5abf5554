"""The ``command`` rule: a legacy check script, exit 0 passes."""

from __future__ import annotations

from prodline.config.rules import CommandRule

from ..context import WorkerContext
from ..process import run_process
from .base import Outcome, RuleResult, RuleRun


class CommandEvaluator:
    async def evaluate(self, run: RuleRun) -> RuleResult:
        spec: CommandRule = run.rule.command  # type: ignore[assignment]
        ctx = WorkerContext(run.context)
        command = ctx.render(spec.run)
        result = await run_process(command, cwd=ctx.workdir(spec.workdir), env=ctx.process_env(spec.env, {}))
        if result.exit_code == 0:
            return RuleResult(outcome=Outcome.passed, reason=result.tail(3))
        tail = result.tail(10)
        return RuleResult(
            outcome=Outcome.failed,
            reason=f"`{command}` exited with code {result.exit_code}{': ' + tail if tail else ''}",
        )
