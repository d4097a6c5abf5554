"""The release workflow: one service version promoted through the environments.

For each environment, in order::

    plan steps -> checks before approval -> preconditions (approvals...) -> checks before deploy
    -> apply steps (each from its approved plan) -> checks after deploy (watching for `for`)
    -> recorded as live in the ledger

A plan found stale at apply time sends the environment back to planning (and
so to its approvals), as the step's `on_stale_plan` says.

The first failure stops the release; later environments stay untouched.
Everything that touches the world is an activity; this module only decides
what happens next, keeps the status that queries and search attributes
expose, and translates outcomes into the release's final state.
"""

from __future__ import annotations

import asyncio
import builtins
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from prodline.activities.context import NON_RETRYABLE_CONFIG, STALE_PLAN, RunContext
    from prodline.activities.ledger import DeploymentRecord, DeploymentState
    from prodline.activities.rules import Outcome, RuleResult, RuleRun
    from prodline.activities.steps import StepResult, StepRun, apply_step, plan_step
    from prodline.config.durations import format_duration
    from prodline.config.release import EnvironmentRun, ReleaseRequest
    from prodline.config.rules import ApprovalRule, Check, Lifecycle, OnFailure, Precondition
    from prodline.config.steps import Step
    from prodline.config.templates import names_in, outputs_prefix, strings_in

    from . import search_attributes as sa
    from .approvals import Decision, DecisionRecord, Gate, Verdict
    from .status import (
        DECIDE_SIGNAL,
        FAILURE_TYPES,
        RELEASE_WORKFLOW,
        STATUS_QUERY,
        EnvironmentStatus,
        Event,
        Phase,
        ReleaseState,
        ReleaseStatus,
        StepStatus,
    )

# Plans made per environment before a stale plan fails the release.
MAX_PLANS = 3

# How long a release paused on a failed check waits for someone to decide.
_PAUSE_TIMEOUT = timedelta(days=7)

# Evaluations of one rule at its configured interval; after that the interval stretches so
# that the whole wait (or watch) takes at most as many again. Each evaluation adds about ten
# events to the release's history, and Temporal ends a workflow at 51,200: a wait of days at
# a 30 s interval would otherwise get the release terminated.
_POLLS_AT_INTERVAL = 500


class StalePlan(Exception):
    """The state changed between a step's plan and its apply."""

    def __init__(self, step: Step, reason: str):
        super().__init__(reason)
        self.step = step
        self.reason = reason


class ReleaseStopped(Exception):
    """Raised inside the workflow to end the release in a given state."""

    def __init__(self, state: ReleaseState, reason: str):
        super().__init__(reason)
        self.state = state
        self.reason = reason


@workflow.defn(name=RELEASE_WORKFLOW)
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
        self._gate_open: Gate | None = None
        # Outputs of applied steps, per environment, for later steps' templates.
        self._outputs: dict[str, dict[str, str]] = {}
        self._sensitive: dict[str, dict[str, str]] = {}

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> ReleaseStatus:
        return self._status

    @workflow.run
    async def run(self, request: ReleaseRequest) -> ReleaseStatus:
        self._event(f"release of {request.service} {request.version} started by {request.initiator}")
        current: EnvironmentRun | None = None
        try:
            for plan in request.environments:
                _stop_if_cancelled()  # before the next environment counts as started
                current = plan
                await self._promote(plan)
                current = None  # done and recorded: a later stop does not touch it
        except ReleaseStopped as stop:
            await self._finish(stop.state, stop.reason, current)
            raise ApplicationError(stop.reason, type=FAILURE_TYPES[stop.state], non_retryable=True) from None
        except asyncio.CancelledError:
            await self._finish(ReleaseState.cancelled, "the release was cancelled", current)
            raise
        await self._finish(ReleaseState.succeeded, "", None)
        return self._status

    # --- one environment ------------------------------------------------------------

    async def _promote(self, plan: EnvironmentRun) -> None:
        env = self._status.environment(plan.name)
        env.phase, env.started_at = Phase.running, workflow.now()
        workflow.upsert_search_attributes([sa.ENVIRONMENT.value_set(plan.name)])
        self._event(f"promoting to {plan.name}", plan.name)
        applied: set[str] = set()
        for attempt in range(1, MAX_PLANS + 1):
            # Plans come first, so approvers see what they approve. A re-plan after a
            # stale plan resumes at the stale step: steps already applied never run again.
            todo = [s for s in plan.steps if s.name not in applied]
            plans = {s.name: await self._plan_step(plan, s) for s in todo if s.has_plan and not _uses_outputs(s)}
            await self._run_checks(plan, Lifecycle.before_approval)
            for rule in plan.preconditions:
                await self._gate(plan, rule, rule.on_failure, f"precondition {rule.label}")
            await self._run_checks(plan, Lifecycle.before_deploy)
            for rule in plan.preconditions:
                if getattr(rule.spec, "recheck_before_deploy", False):
                    await self._gate(plan, rule, rule.on_failure, f"precondition {rule.label} (re-check)")
            try:
                for step in todo:
                    if step.has_plan and step.name not in plans:  # its plan needs an earlier step's outputs
                        plans[step.name] = await self._plan_step(plan, step)
                    await self._apply_step(plan, step, plans.get(step.name))
                    applied.add(step.name)
                break
            except StalePlan as stale:
                policy = getattr(stale.step.spec, "on_stale_plan", "fail")
                if policy == "fail" or attempt == MAX_PLANS:
                    raise ReleaseStopped(
                        ReleaseState.failed, f"{plan.name}: step {stale.step.name}: {stale.reason}"
                    ) from None
                self._event(f"{stale.reason}; planning again and asking for approval again", plan.name)
        await self._run_checks(plan, Lifecycle.after_deploy)
        env.phase, env.finished_at = Phase.succeeded, workflow.now()
        await self._record(plan, DeploymentState.succeeded)
        self._event(f"{self._request.version} is live in {plan.name}", plan.name)

    async def _plan_step(self, plan: EnvironmentRun, step: Step) -> StepResult:
        status = self._step_status(plan, step)
        result = await self._step_activity(plan_step, plan, step, f"{plan.name}: plan {step.name}")
        status.plan, status.summary = result.output, result.summary
        headline = f"plan of {step.name}" + (f": {result.summary}" if result.summary else "")
        self._event(headline + (f"\n{result.output}" if result.output else ""), plan.name)
        return result

    async def _apply_step(self, plan: EnvironmentRun, step: Step, planned: StepResult | None) -> None:
        _stop_if_cancelled()  # before the step counts as started
        status = self._step_status(plan, step)
        status.phase = Phase.running
        self._event(f"step {step.name} started", plan.name)
        try:
            result = await self._step_activity(
                apply_step, plan, step, f"{plan.name}: {step.name} ({step.kind})", planned
            )
        except ReleaseStopped:
            status.phase = Phase.failed
            raise
        except StalePlan:
            status.phase = Phase.pending
            raise
        except asyncio.CancelledError:
            status.phase = Phase.cancelled
            raise
        status.phase, status.summary = Phase.succeeded, result.summary
        outputs = self._outputs.setdefault(plan.name, {})
        sensitive = self._sensitive.setdefault(plan.name, {})
        for key, value in result.outputs.items():
            outputs[f"{outputs_prefix(step.name)}{key}"] = value
        for key in result.sensitive_outputs:
            sensitive[f"{outputs_prefix(step.name)}{key}"] = result.outputs_key or ""
        self._event(f"step {step.name} succeeded" + (f": {result.summary}" if result.summary else ""), plan.name)

    async def _step_activity(
        self, activity, plan: EnvironmentRun, step: Step, summary: str, planned: StepResult | None = None
    ) -> StepResult:
        _stop_if_cancelled()
        try:
            return await workflow.execute_activity(
                activity,
                StepRun(context=self._context(plan, self._request.service_dir), step=step, plan=planned),
                start_to_close_timeout=step.timeout,
                heartbeat_timeout=step.heartbeat_timeout,
                retry_policy=RetryPolicy(
                    maximum_attempts=step.retry.attempts,
                    initial_interval=step.retry.initial_interval,
                    backoff_coefficient=step.retry.backoff,
                    maximum_interval=step.retry.max_interval,
                    non_retryable_error_types=[NON_RETRYABLE_CONFIG, STALE_PLAN],
                ),
                # Wait until the child process is really gone before reporting "cancelled".
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=summary,
            )
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise asyncio.CancelledError() from exc
            if isinstance(exc.cause, ApplicationError) and exc.cause.type == STALE_PLAN:
                raise StalePlan(step, exc.cause.message) from None
            raise ReleaseStopped(ReleaseState.failed, f"{plan.name}: step {step.name} failed: {_reason(exc)}") from None

    def _step_status(self, plan: EnvironmentRun, step: Step) -> StepStatus:
        return next(s for s in self._status.environment(plan.name).steps if s.name == step.name)

    # --- rules ------------------------------------------------------------------------

    async def _run_checks(self, plan: EnvironmentRun, lifecycle: Lifecycle) -> None:
        for check in plan.checks:
            if lifecycle not in check.when:
                continue
            what = f"check {check.label} ({lifecycle.value.replace('_', ' ')})"
            if lifecycle is Lifecycle.after_deploy and check.watch_for:
                await self._watch(plan, check, what)
            else:
                await self._gate(plan, check, check.failure_behaviour(lifecycle), what)

    async def _gate(self, plan: EnvironmentRun, rule: Check | Precondition, behaviour: OnFailure, what: str) -> None:
        """Hold the environment until the rule passes; fail, wait or pause when it does not."""
        if isinstance(rule, Precondition) and rule.approval is not None:
            await self._wait_for_people(
                plan, Gate(environment=plan.name, what=what, rule=rule.approval, initiator=self._request.initiator)
            )
            return
        env = self._status.environment(plan.name)
        deadline = workflow.now() + rule.timeout
        failures = polls = 0
        while True:
            result = await self._evaluate(plan, rule, what)
            polls += 1
            if result.passed:
                break
            if result.outcome is Outcome.pending and result.wait_until is not None:
                # Windows and soak times: wait durably for the moment named, however far.
                self._wait(env, f"{what}: {result.reason}")
                _stop_if_cancelled()
                await workflow.sleep(
                    max(result.wait_until - workflow.now(), timedelta(seconds=1)),
                    summary=f"{rule.label}: until {result.wait_until:%Y-%m-%d %H:%M}Z",
                )
                continue
            failures = failures + 1 if result.outcome is Outcome.failed else 0
            if failures > rule.failures_allowed:
                if behaviour is OnFailure.fail:
                    raise ReleaseStopped(ReleaseState.failed, f"{plan.name}: {what} failed: {result.reason}")
                if behaviour is OnFailure.pause:
                    await self._pause(plan, what, result.reason)
                    break
            interval = _poll_interval(rule.interval, rule.timeout, polls)
            if workflow.now() + interval > deadline:
                raise ReleaseStopped(
                    ReleaseState.timed_out,
                    f"{plan.name}: {what} did not pass within {format_duration(rule.timeout)}: {result.reason}",
                )
            self._wait(env, f"{what}: {result.reason}")
            _stop_if_cancelled()
            await workflow.sleep(interval, summary=f"re-check {rule.label}")
        self._wait(env, "")
        detail = f": {result.reason}" if result.reason else ""
        self._event(f"{what} passed{detail}" if result.passed else f"{what} overridden", plan.name)

    async def _watch(self, plan: EnvironmentRun, check: Check, what: str) -> None:
        """After deploying: the check must keep passing for `for`.

        A failure (beyond `failures_allowed` in a row) fails the release, or pauses
        it with `on_failure: pause`; there is nothing left to wait for, so `wait`
        acts as `fail` here. Inconclusive results (no data) neither pass nor fail,
        but a watch that never saw a pass does not count as passed.
        """
        until = workflow.now() + check.watch_for
        self._event(f"watching {check.label} for {format_duration(check.watch_for)}", plan.name)
        failures, passes, polls, last = 0, 0, 0, ""
        while True:
            result = await self._evaluate(plan, check, what)
            polls += 1
            failures = failures + 1 if result.outcome is Outcome.failed else 0
            passes += result.passed
            last = result.reason
            if failures > check.failures_allowed:
                await self._after_deploy_failure(plan, check, what, result.reason)
                failures = 0
            remaining = until - workflow.now()
            if remaining <= timedelta(0):
                break
            _stop_if_cancelled()
            interval = _poll_interval(check.interval, check.watch_for, polls)
            await workflow.sleep(min(interval, remaining), summary=f"watch {check.label}")
        if not passes:
            await self._after_deploy_failure(
                plan, check, what, f"no conclusive result in {format_duration(check.watch_for)}: {last}"
            )
        self._event(f"{what} passed for {format_duration(check.watch_for)}", plan.name)

    async def _after_deploy_failure(self, plan: EnvironmentRun, check: Check, what: str, reason: str) -> None:
        # Automatic rollback (release safety) hooks in here.
        if check.failure_behaviour(Lifecycle.after_deploy) is not OnFailure.pause:
            raise ReleaseStopped(ReleaseState.failed, f"{plan.name}: {what} failed: {reason}")
        await self._pause(plan, what, reason)

    async def _pause(self, plan: EnvironmentRun, what: str, reason: str) -> None:
        """A failed rule with `on_failure: pause`: people resume (approve) or reject."""
        # Whoever may approve this environment may resume it, under the same rules (anyone, without one).
        approvals = [p.approval for p in plan.preconditions if p.approval is not None]
        rule = (
            approvals[0].model_copy(update={"timeout": _PAUSE_TIMEOUT})
            if approvals
            else ApprovalRule(timeout=_PAUSE_TIMEOUT)
        )
        self._event(f"paused: {what} failed: {reason}; `prodline approve` resumes, `prodline reject` stops", plan.name)
        await self._wait_for_people(
            plan, Gate(environment=plan.name, what=f"paused on {what}", rule=rule, initiator=self._request.initiator)
        )

    async def _wait_for_people(self, plan: EnvironmentRun, gate: Gate) -> None:
        env = self._status.environment(plan.name)
        self._gate_open = gate
        self._wait(env, gate.progress())
        try:
            _stop_if_cancelled()
            await workflow.wait_condition(
                lambda: gate.settled, timeout=gate.rule.timeout, timeout_summary=f"{gate.what} timeout"
            )
        except builtins.TimeoutError:
            raise ReleaseStopped(
                ReleaseState.timed_out,
                f"{plan.name}: {gate.progress()}: timed out after {format_duration(gate.rule.timeout)}",
            ) from None
        finally:
            self._gate_open = None
        if gate.rejected_by:
            comment = f": {gate.rejection_comment}" if gate.rejection_comment else ""
            raise ReleaseStopped(ReleaseState.rejected, f"{plan.name}: rejected by {gate.rejected_by}{comment}")
        self._wait(env, "")
        self._event(f"{gate.what}: approved by {', '.join(gate.approvals)}", plan.name)

    @workflow.signal(name=DECIDE_SIGNAL)
    def decide(self, decision: Decision) -> None:
        """`prodline approve|reject`: judged against the open gate, recorded either way."""
        gate = self._gate_open
        if gate is None:
            where = (
                self._status.state.value
                if self._status.state.final
                else f"not waiting for a decision ({self._where()})"
            )
            refusal = f"the release is {where}"
        else:
            refusal = gate.judge(decision)
        record = DecisionRecord(**decision.model_dump(), at=workflow.now(), accepted=not refusal, reason=refusal)
        self._status.decisions.append(record)
        verb = "approved" if decision.verdict is Verdict.approve else "rejected"
        text = f"{decision.by} {verb}" + (f" ({decision.comment})" if decision.comment else "")
        self._event(f"{text}" if not refusal else f"refused: {text}: {refusal}", decision.environment)
        if gate is not None and not refusal and not gate.settled:
            self._wait(self._status.environment(gate.environment), gate.progress())

    def _where(self) -> str:
        running = [e for e in self._status.environments if e.phase in (Phase.running, Phase.waiting)]
        return f"deploying {running[0].name}" if running else "between environments"

    async def _evaluate(self, plan: EnvironmentRun, rule: Check | Precondition, what: str) -> RuleResult:
        ctx = self._context(plan, self._request.application_dir)
        ctx.args = {k: str(v) for k, v in rule.args.items()}
        _stop_if_cancelled()
        try:
            return await workflow.execute_activity(
                "prodline.evaluate_rule",
                RuleRun(context=ctx, rule=rule),
                result_type=RuleResult,
                # No heartbeat timeout: HTTP evaluations do not heartbeat; each kind is bounded by its budget.
                start_to_close_timeout=_rule_timeout(rule),
                retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=[NON_RETRYABLE_CONFIG]),
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

    def _context(self, plan: EnvironmentRun, base_dir: str) -> RunContext:
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
            run_id=workflow.info().run_id,
            outputs=self._outputs.get(plan.name, {}),
            sensitive_outputs=self._sensitive.get(plan.name, {}),
        )

    async def _record(self, plan: EnvironmentRun, state: DeploymentState, reason: str = "") -> None:
        """Tell the environment's ledger how this deployment ended.

        A local activity: it runs inside the workflow task (one marker event, no
        extra task round trip), which matters on a release's hot path.
        """
        started = self._status.environment(plan.name).started_at or workflow.now()
        record = DeploymentRecord(
            application=self._request.application,
            service=self._request.service,
            environment=plan.name,
            version=self._request.version,
            release_id=self._request.release_id,
            state=state,
            started_at=started,
            finished_at=workflow.now(),
            reason=reason,
        )
        await workflow.execute_local_activity(
            "prodline.record_deployment",
            record,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )

    async def _finish(self, state: ReleaseState, reason: str, current: EnvironmentRun | None) -> None:
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

    def _wait(self, env: EnvironmentStatus, what: str) -> None:
        """Show what the environment waits on ("" when it moves again)."""
        if what and what != env.waiting_on:
            self._event(f"waiting: {what}", env.name)
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


def _poll_interval(interval: timedelta, span: timedelta, polls: int) -> timedelta:
    """The rule's interval for its first evaluations, then one that fits the rest in as many again."""
    return interval if polls < _POLLS_AT_INTERVAL else max(interval, span / _POLLS_AT_INTERVAL)


def _stop_if_cancelled() -> None:
    """Honour a cancel request that the activity in flight swallowed.

    A cancel arriving while an activity runs goes to the activity; when the
    activity finishes anyway (rules do not heartbeat, and steps hear of it only
    at their next heartbeat), the SDK hands the workflow the activity's result
    and the request is gone. Checked before anything new starts or waits, so a
    cancelled release never goes on to the next step, check or environment.
    """
    if workflow.cancellation_reason() is not None:
        raise asyncio.CancelledError()


def _reason(exc: ActivityError) -> str:
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        return f"timed out ({cause.type.name.lower().replace('_', '-') if cause.type else 'timeout'})"
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or exc)


def _uses_outputs(step: Step) -> bool:
    """Whether the step's config reads an earlier step's outputs (so it can only be planned after it)."""
    return any(name.startswith("steps.") for text in strings_in(step.spec.model_dump()) for name in names_in(text))


def _rule_timeout(rule: Check | Precondition) -> timedelta:
    spec = rule.spec
    budget = getattr(spec, "budget", None) or getattr(spec, "timeout", None) or timedelta(minutes=5)
    return budget + timedelta(seconds=30)
