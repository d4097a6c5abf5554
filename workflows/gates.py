"""Gates: where a release holds until a rule passes or people decide.

* Rule gates evaluate a check or precondition (one activity per evaluation)
  and wait between evaluations with durable timers: ``wait`` keeps waiting
  until the rule's timeout, ``fail`` stops the release, ``pause`` hands it to
  people. Watches (``for``) keep evaluating after deploying.
* People gates (approvals, and resuming a paused release) wait for decisions:
  Updates whose every attempt is in history with who, when, the comment and
  the verdict. Who decided is established first (``verification.py``: the
  signer of a signed decision, the name given where ``verify: none``), then the
  open :class:`Gate` judges it deterministically against its rule. A gate names
  the plans it approves: a re-plan opens a new gate, and a signature made for
  the old plans does not count there.

Everything here runs inside the release workflow: deterministic, no I/O.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from prodline.config.durations import format_duration
    from prodline.config.release import EnvironmentRun
    from prodline.config.rules import ApprovalRule, Check, Lifecycle, OnFailure, Precondition
    from prodline.contracts import (
        EVALUATE_RULE,
        NON_RETRYABLE_CONFIG,
        Decision,
        DecisionRecord,
        Outcome,
        ReleaseState,
        RuleResult,
        RuleRun,
        RunContext,
        Verdict,
    )
    from prodline.identity.verify import Keyring

    from .outcomes import ReleaseStopped, activity_failure, stop_if_cancelled
    from .status import StatusBoard
    from .verification import Identity, Refused, identify_decision

# How long a release paused on a failed rule waits for someone to decide, unless the rule
# sets its own `timeout`.
PAUSE_TIMEOUT = timedelta(days=7)

# Evaluations of one rule at its configured interval; after that the interval stretches so
# that the whole wait (or watch) takes at most as many again. Each evaluation adds about ten
# events to the release's history, and Temporal ends a workflow at 51,200: a wait of days at
# a 30 s interval would otherwise get the release terminated.
POLLS_AT_INTERVAL = 500

# Spare time an evaluation gets beyond its kind's own budget (scheduling, retries of a refused connection).
_EVALUATION_SLACK = timedelta(seconds=30)


class Gate(BaseModel):
    """A point where the release waits for people: an approval or a pause."""

    environment: str
    what: str
    rule: ApprovalRule
    initiator: str
    id: str = Field(default="", description="Which gate of the run ('2: precondition approval'): signatures name it.")
    verify: str = "none"
    approvals: list[str] = Field(default_factory=list)
    rejected_by: str = ""
    rejection_comment: str = ""

    @property
    def settled(self) -> bool:
        return bool(self.rejected_by) or len(self.approvals) >= self.rule.min_approvers

    def progress(self) -> str:
        have = f"{len(self.approvals)}/{self.rule.min_approvers} approvals"
        who = f" ({', '.join(self.approvals)})" if self.approvals else ""
        pool = f"; approvers: {', '.join(self.rule.approvers)}" if self.rule.approvers else ""
        return f"{self.what}: {have}{who}{pool}"

    def judge(self, by: str, decision: Decision) -> str:
        """Record the decision of ``by`` (established before) if it counts; return why not ("" if accepted)."""
        if self.settled:
            return "this decision has already been made"
        if self.rule.approvers and by not in self.rule.approvers:
            return f"{by} may not decide for {self.environment} (approvers: {', '.join(self.rule.approvers)})"
        if decision.verdict is Verdict.reject:
            self.rejected_by, self.rejection_comment = by, decision.comment
            return ""
        if self.rule.forbid_initiator and by == self.initiator:
            return f"{by} started this release and may not approve it"
        if by in self.approvals:
            return f"{by} already approved; {self.rule.min_approvers} distinct approvers are needed"
        self.approvals.append(by)
        return ""


def poll_interval(interval: timedelta, span: timedelta, polls: int) -> timedelta:
    """The rule's interval for its first evaluations, then one that fits the rest in as many again."""
    return interval if polls < POLLS_AT_INTERVAL else max(interval, span / POLLS_AT_INTERVAL)


class Gates:
    """The rule and people gates of one release.

    ``context`` builds the run context an evaluation gets (the release's values
    in one environment); ``open_gate`` is the people gate decisions go to now.
    """

    def __init__(self, board: StatusBoard, initiator: str, context: Callable[[EnvironmentRun], RunContext]):
        self._board = board
        self.initiator = initiator  # the verified signer once a signed start is checked
        self._context = context
        self.keys = Keyring.of({})  # the people of the pinned revision, once resolved
        self.open_gate: Gate | None = None
        self._gates_opened = 0
        # Set while a canary's pause runs its rules: an operator's command stops them at once.
        self.interrupted: Callable[[], bool] = lambda: False
        # Rule kinds that read only the clock and Temporal run as local activities (older
        # histories evaluated every rule as an activity; the release sets this from its patch).
        self.local_rules = False

    # --- rules ------------------------------------------------------------------------

    async def run_checks(self, stage: EnvironmentRun, lifecycle: Lifecycle) -> None:
        for check in stage.checks:
            if lifecycle not in check.when:
                continue
            label = f"check {check.label} ({lifecycle.value.replace('_', ' ')})"
            if lifecycle is Lifecycle.after_deploy and check.watch_for:
                await self.watch(stage, check, label)
            else:
                await self.hold(stage, check, check.failure_behaviour(lifecycle), label)

    async def hold(self, stage: EnvironmentRun, rule: Check | Precondition, behaviour: OnFailure, label: str) -> None:
        """Hold the environment until the rule passes; fail, wait or pause when it does not."""
        if isinstance(rule, Precondition) and rule.approval is not None:
            await self.wait_for_people(stage, self.gate(stage, label, rule.approval))
            return
        deadline = workflow.now() + rule.timeout
        failures = polls = 0
        while True:
            result = await self.evaluate(stage, rule, label)
            polls += 1
            if result.passed:
                break
            if result.outcome is Outcome.pending and result.wait_until is not None:
                # Windows and soak times: wait durably for the moment named, however far.
                self._board.wait(stage.name, f"{label}: {result.reason}")
                stop_if_cancelled()
                await workflow.sleep(
                    max(result.wait_until - workflow.now(), timedelta(seconds=1)),
                    summary=f"{rule.label}: until {result.wait_until:%Y-%m-%d %H:%M}Z",
                )
                continue
            failures = failures + 1 if result.outcome is Outcome.failed else 0
            if failures > rule.failures_allowed:
                if behaviour is OnFailure.fail:
                    raise ReleaseStopped(ReleaseState.failed, f"{stage.name}: {label} failed: {result.reason}")
                if behaviour is OnFailure.pause:
                    await self.pause(stage, rule, label, result.reason)
                    break
            interval = poll_interval(rule.interval, rule.timeout, polls)
            if workflow.now() + interval > deadline:
                raise ReleaseStopped(
                    ReleaseState.timed_out,
                    f"{stage.name}: {label} did not pass within {format_duration(rule.timeout)}: {result.reason}",
                )
            self._board.wait(stage.name, f"{label}: {result.reason}")
            stop_if_cancelled()
            await workflow.sleep(interval, summary=f"re-check {rule.label}")
        self._board.wait(stage.name, "")
        detail = f": {result.reason}" if result.reason else ""
        self._board.event(f"{label} passed{detail}" if result.passed else f"{label} overridden", stage.name)

    async def watch(self, stage: EnvironmentRun, check: Check, label: str) -> None:
        """After deploying: the check must keep passing for `for`.

        A failure (beyond `failures_allowed` in a row) fails the release, or pauses
        it with `on_failure: pause`; there is nothing left to wait for, so `wait`
        acts as `fail` here. Inconclusive results (no data) neither pass nor fail,
        but a watch that never saw a pass does not count as passed.
        """
        until = workflow.now() + check.watch_for
        self._board.event(f"watching {check.label} for {format_duration(check.watch_for)}", stage.name)
        failures, passes, polls, last = 0, 0, 0, ""
        while True:
            result = await self.evaluate(stage, check, label)
            polls += 1
            failures = failures + 1 if result.outcome is Outcome.failed else 0
            passes += result.passed
            last = result.reason
            if failures > check.failures_allowed:
                await self._after_deploy_failure(stage, check, label, result.reason)
                failures = 0
            remaining = until - workflow.now()
            if remaining <= timedelta(0):
                break
            stop_if_cancelled()
            interval = poll_interval(check.interval, check.watch_for, polls)
            await workflow.sleep(min(interval, remaining), summary=f"watch {check.label}")
        if not passes:
            await self._after_deploy_failure(
                stage, check, label, f"no conclusive result in {format_duration(check.watch_for)}: {last}"
            )
        self._board.event(f"{label} passed for {format_duration(check.watch_for)}", stage.name)

    async def _after_deploy_failure(self, stage: EnvironmentRun, check: Check, label: str, reason: str) -> None:
        # Automatic rollback (release safety) hooks in here.
        if check.failure_behaviour(Lifecycle.after_deploy) is not OnFailure.pause:
            raise ReleaseStopped(ReleaseState.failed, f"{stage.name}: {label} failed: {reason}")
        await self.pause(stage, check, label, reason)

    async def evaluate(self, stage: EnvironmentRun, rule: Check | Precondition, label: str) -> RuleResult:
        ctx = self._context(stage).model_copy(update={"args": {k: str(v) for k, v in rule.args.items()}})
        stop_if_cancelled()
        run = RuleRun(context=ctx, rule=rule)
        # No heartbeat timeout: HTTP evaluations do not heartbeat; each kind is bounded by its budget.
        budget = rule.spec.evaluation_budget + _EVALUATION_SLACK
        retry = RetryPolicy(maximum_attempts=5, non_retryable_error_types=[NON_RETRYABLE_CONFIG])
        waits = workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        summary = f"{stage.name}: {label}"
        try:
            if self.local_rules and rule.spec.evaluated_locally:
                result = await workflow.execute_local_activity(
                    EVALUATE_RULE, run, result_type=RuleResult, start_to_close_timeout=budget,
                    retry_policy=retry, cancellation_type=waits, summary=summary,
                )  # fmt: skip
            else:
                result = await workflow.execute_activity(
                    EVALUATE_RULE, run, result_type=RuleResult, start_to_close_timeout=budget,
                    retry_policy=retry, cancellation_type=waits, summary=summary,
                    task_queue=stage.task_queue or None,  # the environment's own workers, if it names them
                )  # fmt: skip
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise asyncio.CancelledError() from exc
            # A rule that cannot be evaluated never lets a deployment through.
            raise ReleaseStopped(
                ReleaseState.failed, f"{stage.name}: {label} could not be evaluated: {activity_failure(exc)}"
            ) from None
        except FailureError as exc:  # how a local activity's last failure (or its timeout) arrives
            if isinstance(exc, CancelledError):
                raise asyncio.CancelledError() from exc
            raise ReleaseStopped(
                ReleaseState.failed, f"{stage.name}: {label} could not be evaluated: {exc.message}"
            ) from None
        if self.interrupted():  # the cancel the command sent came too late for the evaluation
            raise asyncio.CancelledError()
        return result

    # --- people -----------------------------------------------------------------------

    async def pause(self, stage: EnvironmentRun, failed: Check | Precondition, label: str, reason: str) -> None:
        """A failed rule with `on_failure: pause`: people resume (approve) or reject."""
        # People have the failed rule's own `timeout` when it sets one, else PAUSE_TIMEOUT.
        timeout = failed.timeout if "timeout" in failed.model_fields_set else PAUSE_TIMEOUT
        # Whoever may approve this environment may resume it, under the same rules (anyone, without one).
        approvals = [p.approval for p in stage.preconditions if p.approval is not None]
        rule = approvals[0].model_copy(update={"timeout": timeout}) if approvals else ApprovalRule(timeout=timeout)
        self._board.event(
            f"paused: {label} failed: {reason}; `prodline approve` resumes, `prodline reject` stops", stage.name
        )
        await self.wait_for_people(stage, self.gate(stage, f"paused on {label}", rule))

    def gate(self, stage: EnvironmentRun, what: str, rule: ApprovalRule) -> Gate:
        # Numbered: a signature names the one gate it is for. Its plans are the ones the status
        # shows while it is open (nothing plans while people decide; a re-plan opens another gate).
        self._gates_opened += 1
        return Gate(
            environment=stage.name,
            what=what,
            rule=rule,
            initiator=self.initiator,
            id=f"{self._gates_opened}: {what}",
            verify=stage.verify,
        )

    async def wait_for_people(self, stage: EnvironmentRun, gate: Gate) -> None:
        self.open_gate = gate
        env = self._board.environment(stage.name)
        env.gate = gate.id
        self._board.wait(stage.name, gate.progress())
        try:
            stop_if_cancelled()
            await workflow.wait_condition(
                lambda: gate.settled, timeout=gate.rule.timeout, timeout_summary=f"{gate.what} timeout"
            )
        except builtins.TimeoutError:
            raise ReleaseStopped(
                ReleaseState.timed_out,
                f"{stage.name}: {gate.progress()}: timed out after {format_duration(gate.rule.timeout)}",
            ) from None
        finally:
            self.open_gate = None
            env.gate = ""
        if gate.rejected_by:
            comment = f": {gate.rejection_comment}" if gate.rejection_comment else ""
            raise ReleaseStopped(ReleaseState.rejected, f"{stage.name}: rejected by {gate.rejected_by}{comment}")
        self._board.wait(stage.name, "")
        self._board.event(f"{gate.what}: approved by {', '.join(gate.approvals)}", stage.name)

    def decide(self, decision: Decision) -> DecisionRecord:
        """Establish who decided, judge the decision against the open gate; record it either way."""
        gate = self.open_gate
        who = Identity(person=decision.by)
        if gate is None:
            refusal = f"the release is {self._board.where()}"
        elif decision.environment != gate.environment:
            refusal = f"the release is waiting in {gate.environment}, not {decision.environment}"
        else:
            try:
                who = identify_decision(decision, gate.verify, self.keys, workflow.now(), self._board.status)
                refusal = gate.judge(who.person, decision)
            except Refused as exc:
                refusal = str(exc)
                # Unproven where proof was asked for: the record must not read as that person's act.
                who = exc.who or Identity(person=f"{decision.by} (claimed)")
        record = DecisionRecord(
            request_id=decision.request_id,
            environment=decision.environment,
            by=who.person,
            verdict=decision.verdict,
            comment=decision.comment,
            at=workflow.now(),
            accepted=not refusal,
            reason=refusal,
            progress=gate.progress() if gate is not None else "",
            verified=who.verified,
            signature_digest=who.signature_digest,
        )
        self._board.status.decisions.append(record)
        verb = "approved" if decision.verdict is Verdict.approve else "rejected"
        how = f" [{who.verified}]" if who.verified else ""
        text = f"{who.person} {verb}{how}" + (f" ({decision.comment})" if decision.comment else "")
        self._board.event(text if not refusal else f"refused: {text}: {refusal}", decision.environment)
        if gate is not None and not refusal and not gate.settled:
            self._board.wait(gate.environment, gate.progress())
        return record
