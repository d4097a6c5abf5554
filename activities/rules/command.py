"""The ``command`` rule: a legacy check script, exit 0 passes."""

from __future__ import annotations

from prodline.config.rules import CommandRule
from prodline.contracts import Outcome, RuleResult, RuleRun

from ..context import WorkerContext
from ..process import failure_message, run_process
from .base import RuleEvaluator


class CommandEvaluator(RuleEvaluator[CommandRule]):
    spec_type = CommandRule

    async def evaluate(self, run: RuleRun, spec: CommandRule) -> RuleResult:
        ctx = WorkerContext(run.context)
        masked = list(ctx.sensitive_values().values())
        command = ctx.render(spec.run)
        result = await run_process(
            command, cwd=ctx.workdir(spec.workdir), env=ctx.process_env(spec.env, {}), secrets=masked
        )
        if result.exit_code == 0:
            return RuleResult(outcome=Outcome.passed, reason=result.tail(3))
        # Reported as a failed command step is: a multi-line script named by its first line.
        return RuleResult(outcome=Outcome.failed, reason=failure_message(command, result, masked))
