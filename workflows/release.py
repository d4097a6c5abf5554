"""The release workflow: one service version promoted through the environments.

For each environment, in order::

    plan steps -> checks before approval -> preconditions -> checks before deploy
    -> apply steps -> checks after deploy (watching for `for`) -> recorded as live

The first failure stops the release; later environments stay untouched.
Everything that touches the world is an activity; this module only decides
what happens next, keeps the status that queries and search attributes
expose, and translates outcomes into the release's final state.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from prodline.activities.context import NON_RETRYABLE_CONFIG, RunContext
    from prodline.activities.ledger import DeploymentRecord, DeploymentState
    from prodline.activities.rules import RuleResult, RuleRun, evaluate_rule
    from prodline.activities.steps import StepResult, StepRun, apply_step, plan_step
    from prodline.config.release import EnvironmentPlan, ReleaseRequest
    from prodline.config.rules import Check, Lifecycle, OnFailure, Precondition
    from prodline.config.steps import Step

    from . import search_attributes as sa
    from .status import EnvironmentStatus, Event, Phase, ReleaseState, ReleaseStatus, StepStatus

# Failure types a release ends with; the CLI maps them to exit codes.
FAILURE_TYPES = {
    ReleaseState.failed: "ReleaseFailed",
    ReleaseState.rejected: "ReleaseRejected",
    ReleaseState.timed_out: "ReleaseTimedOut",
}

# Bookkeeping activities are quick and safe to retry.
_QUICK = dict(
    start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10))
)


class ReleaseStopped(Exception):
    """Raised inside the workflow to end the release in a given state."""

    def __init__(self, state: ReleaseState, reason: str):
        super().__init__(reason)
        self.state = state
        self.reason = reason


@workflow.defn(name="Release")
class ReleaseWorkflow:
    @workflow.init
    def __init__(self, request: ReleaseRequest) -> None:
        self._request = request
        self._status = ReleaseStatus(
            release_id=request.release_id,
            application=request.application,
            service=request.service,
            version=request.version,
            initiator=request.initiator,
            environments=[
                EnvironmentStatus(name=env.name, steps=[StepStatus(name=s.name, kind=s.kind) for s in env.steps])
                for env in request.environments
            ],
        )
        self._started: dict[str, datetime] = {}

    @workflow.query
    def status(self) -> ReleaseStatus:
        return self._status

    @workflow.run
    async def run(self, request: ReleaseRequest) -> ReleaseStatus:
        self._event(f"release of {request.service} {request.version} started by {request.initiator}")
        current: EnvironmentPlan | None = None
        try:
            for plan in request.environments:
                current = plan
                await self._promote(plan)
            current = None
        except ReleaseStopped as stop:
            await self._finish(stop.state, stop.reason, current)
            raise ApplicationError(stop.reason, type=FAILURE_TYPES[stop.state], non_retryable=True) from None
        except asyncio.CancelledError:
            await self._finish(ReleaseState.cancelled, "the release was cancelled", current)
            raise
        await self._finish(ReleaseState.succeeded, "", None)
        return self._status

    # --- one environment ------------------------------------------------------------

    async def _promote(self, plan: EnvironmentPlan) -> None:
        env = self._status.environment(plan.name)
        env.phase, env.started_at = Phase.running, workflow.now()
        workflow.upsert_search_attributes([sa.ENVIRONMENT.value_set(plan.name)])
        self._event(f"promoting to {plan.name}", plan.name)
        await self._record(plan, DeploymentState.deploying)
        for step in plan.steps:
            if step.has_plan:
                await self._plan_step(plan, step)
        await self._run_checks(plan, Lifecycle.before_approval)
        for rule in plan.preconditions:
            await self._gate(plan, rule, rule.on_failure, f"precondition {rule.label}")
        await self._run_checks(plan, Lifecycle.before_deploy)
        for step in plan.steps:
            await self._apply_step(plan, step)
        await self._run_checks(plan, Lifecycle.after_deploy)
        env.phase, env.finished_at = Phase.succeeded, workflow.now()
        await self._record(plan, DeploymentState.succeeded)
        self._event(f"{self._request.version} is live in {plan.name}", plan.name)

    async def _plan_step(self, plan: EnvironmentPlan, step: Step) -> None:
        status = self._step_status(plan, step)
        result = await self._step_activity(plan_step, plan, step, f"{plan.name}: plan {step.name}")
        status.plan = result.output
        if result.output:
            self._event(f"plan of {step.name}:\n{result.output}", plan.name)

    async def _apply_step(self, plan: EnvironmentPlan, step: Step) -> None:
        status = self._step_status(plan, step)
        status.phase = Phase.running
        self._event(f"step {step.name} started", plan.name)
        try:
            result = await self._step_activity(apply_step, plan, step, f"{plan.name}: {step.name} ({step.kind})")
        except ReleaseStopped:
            status.phase = Phase.failed
            raise
        except asyncio.CancelledError:
            status.phase = Phase.cancelled
            raise
        status.phase, status.summary = Phase.succeeded, result.summary
        self._event(f"step {step.name} succeeded", plan.name)

    async def _step_activity(self, activity, plan: EnvironmentPlan, step: Step, summary: str) -> StepResult:
        try:
            return await workflow.execute_activity(
                activity,
                StepRun(context=self._context(plan, self._request.service_dir), step=step),
                start_to_close_timeout=step.timeout,
                heartbeat_timeout=step.heartbeat_timeout,
                retry_policy=RetryPolicy(
                    maximum_attempts=step.retry.attempts,
                    initial_interval=step.retry.initial_interval,
                    backoff_coefficient=step.retry.backoff,
                    maximum_interval=step.retry.max_interval,
                    non_retryable_error_types=[NON_RETRYABLE_CONFIG],
                ),
                # Wait until the child process is really gone before reporting "cancelled".
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=summary,
            )
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise asyncio.CancelledError() from exc
            raise ReleaseStopped(ReleaseState.failed, f"{plan.name}: step {step.name} failed: {_reason(exc)}") from None

    def _step_status(self, plan: EnvironmentPlan, step: Step) -> StepStatus:
        return next(s for s in self._status.environment(plan.name).steps if s.name == step.name)

    # --- rules ------------------------------------------------------------------------

    async def _run_checks(self, plan: EnvironmentPlan, lifecycle: Lifecycle) -> None:
        for check in plan.checks:
            if lifecycle not in check.when:
                continue
            what = f"check {check.label} ({lifecycle.value.replace('_', ' ')})"
            if lifecycle is Lifecycle.after_deploy and check.watch_for:
                await self._watch(plan, check, what)
            else:
                await self._gate(plan, check, check.failure_behaviour(lifecycle), what)

    async def _gate(self, plan: EnvironmentPlan, rule: Check | Precondition, behaviour: OnFailure, what: str) -> None:
        """Evaluate until the rule passes; fail at once or wait, as configured."""
        env = self._status.environment(plan.name)
        deadline = workflow.now() + rule.timeout
        while True:
            result = await self._evaluate(plan, rule, what)
            if result.passed:
                self._event(f"{what} passed", plan.name)
                break
            if behaviour is OnFailure.fail:
                raise ReleaseStopped(ReleaseState.failed, f"{plan.name}: {what} failed: {result.reason}")
            if workflow.now() + rule.interval > deadline:
                raise ReleaseStopped(
                    ReleaseState.timed_out, f"{plan.name}: {what} still failing after {rule.timeout}: {result.reason}"
                )
            if env.waiting_on != what:
                self._event(f"waiting: {what}: {result.reason}", plan.name)
            self._set_waiting(env, what)
            await workflow.sleep(rule.interval, summary=f"re-check {rule.label}")
        self._set_waiting(env, "")

    async def _watch(self, plan: EnvironmentPlan, check: Check, what: str) -> None:
        """After deploying: the check must keep passing for `for`; any failure fails the release."""
        until = workflow.now() + check.watch_for
        self._event(f"watching {check.label} for {check.watch_for}", plan.name)
        while True:
            result = await self._evaluate(plan, check, what)
            if not result.passed:
                # Automatic rollback (release-safety) hooks in here.
                raise ReleaseStopped(ReleaseState.failed, f"{plan.name}: {what} failed: {result.reason}")
            remaining = until - workflow.now()
            if remaining <= timedelta(0):
                break
            await workflow.sleep(min(check.interval, remaining), summary=f"watch {check.label}")
        self._event(f"{what} passed", plan.name)

    async def _evaluate(self, plan: EnvironmentPlan, rule: Check | Precondition, what: str) -> RuleResult:
        ctx = self._context(plan, self._request.application_dir)
        ctx.args = {k: str(v) for k, v in rule.args.items()}
        try:
            return await workflow.execute_activity(
                evaluate_rule,
                RuleRun(context=ctx, rule=rule),
                start_to_close_timeout=_rule_timeout(rule),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=[NON_RETRYABLE_CONFIG]),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"{plan.name}: {what}",
            )
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise asyncio.CancelledError() from exc
            # A rule that cannot be evaluated never lets a deployment through.
            raise ReleaseStopped(
                ReleaseState.failed, f"{plan.name}: {what} could not be evaluated: {_reason(exc)}"
            ) from None

    # --- bookkeeping ------------------------------------------------------------------

    def _context(self, plan: EnvironmentPlan, base_dir: str) -> RunContext:
        r = self._request
        return RunContext(
            release_id=r.release_id,
            application=r.application,
            service=r.service,
            version=r.version,
            environment=plan.name,
            initiator=r.initiator,
            base_dir=base_dir,
            parameters=plan.parameters,
            secrets=r.secrets,
            env=plan.env,
        )

    async def _record(self, plan: EnvironmentPlan, state: DeploymentState, reason: str = "") -> None:
        started = self._started.setdefault(plan.name, workflow.now())
        record = DeploymentRecord(
            application=self._request.application,
            service=self._request.service,
            environment=plan.name,
            version=self._request.version,
            release_id=self._request.release_id,
            state=state,
            started_at=started,
            finished_at=None if state is DeploymentState.deploying else workflow.now(),
            reason=reason,
        )
        await workflow.execute_activity(
            "prodline.record_deployment", record, summary=f"record {plan.name}: {state.value}", **_QUICK
        )

    async def _finish(self, state: ReleaseState, reason: str, current: EnvironmentPlan | None) -> None:
        self._status.state, self._status.reason = state, reason
        if current is not None:
            env = self._status.environment(current.name)
            env.phase = Phase.cancelled if state is ReleaseState.cancelled else Phase.failed
            env.finished_at, env.waiting_on = workflow.now(), ""
            outcome = DeploymentState.cancelled if state is ReleaseState.cancelled else DeploymentState.failed
            await self._record(current, outcome, reason)
        for env in self._status.environments:
            if env.phase is Phase.pending:
                env.phase = Phase.skipped
        self._event(f"release {state.value}" + (f": {reason}" if reason else ""))
        workflow.upsert_search_attributes([sa.STATE.value_set(state.value)])
        workflow.set_current_details(self._status.markdown())

    def _set_waiting(self, env: EnvironmentStatus, what: str) -> None:
        env.waiting_on = what
        env.phase = Phase.waiting if what else Phase.running
        state = ReleaseState.waiting if what else ReleaseState.running
        if self._status.state is not state:
            self._status.state = state
            workflow.upsert_search_attributes([sa.STATE.value_set(state.value)])
        workflow.set_current_details(self._status.markdown())

    def _event(self, message: str, environment: str = "") -> None:
        self._status.events.append(Event(at=workflow.now(), environment=environment, message=message))
        workflow.set_current_details(self._status.markdown())
        workflow.logger.info(message, extra={"release": self._request.release_id, "environment": environment})


def _reason(exc: ActivityError) -> str:
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        return f"timed out ({cause.type.name.lower().replace('_', '-') if cause.type else 'timeout'})"
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or exc)


def _rule_timeout(rule: Check | Precondition) -> timedelta:
    spec_timeout = getattr(rule.spec, "timeout", None)
    return (spec_timeout or timedelta(minutes=5)) + timedelta(seconds=30)
