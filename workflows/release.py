"""The release workflow: one service version promoted through the environments.

First, on the control queue, an activity resolves the request (which carries no
policy) against the application's revision registered in Temporal and the
service file inside the release's bundle; the plan it returns is in history and
pins that revision for the release's whole life. Then, for each environment, in
order, on that environment's task queue if it names one::

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
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from prodline.config.release import BundleRef, EnvironmentRun, ReleasePlan, ReleaseRequest
    from prodline.config.rules import Lifecycle
    from prodline.config.steps import Step
    from prodline.config.templates import outputs_prefix
    from prodline.contracts import (
        APPLY_STEP,
        DECIDE_SIGNAL,
        DECIDE_UPDATE,
        ENSURE_DRIFT_CHECKS,
        FAILURE_TYPES,
        FINAL_STATUS_MEMO,
        NON_RETRYABLE_CONFIG,
        PLAN_STEP,
        PROMOTE_STEP,
        PROVE_RECORD,
        RECORD_DEPLOYMENT,
        RELEASE_WORKFLOW,
        RESOLVE_RELEASE,
        ROLLOUT_UPDATE,
        STALE_PLAN,
        STATUS_QUERY,
        TURN_SIGNAL,
        UNPROVEN_RECORD,
        WAIT_STEP,
        Decision,
        DecisionRecord,
        DeploymentKind,
        DeploymentRecord,
        DeploymentState,
        DriftCheck,
        EnvironmentStatus,
        LaneTurn,
        Phase,
        ReleaseRef,
        ReleaseState,
        ReleaseStatus,
        RolloutCommand,
        RunContext,
        StepAction,
        StepProgress,
        StepResult,
        StepRun,
        StepStatus,
        Verdict,
    )
    from prodline.errors import InvalidInput
    from prodline.identity.verify import Keyring

    from . import search_attributes as sa
    from .canary import Canary, StepCall
    from .gates import Gates
    from .lane import Lanes
    from .outcomes import ReleaseStopped, StalePlan, activity_failure, stop_if_cancelled
    from .status import StatusBoard, markdown
    from .verification import Refused, identify_initiator

T = TypeVar("T")

# Plans made per environment before a stale plan fails the release.
MAX_PLANS = 3

# Releases resolve their plan from the registered application; older ones carried it in their input.
REGISTERED_APPLICATIONS = "registered-applications"
_RESOLVE_TIMEOUT = timedelta(minutes=10)  # fetching and checking a bundle of up to 100 MB

# Decisions a release takes before refusing more (each is in history; a flood must not end the release).
MAX_DECISIONS = 500

# Aborting a canary as the release stops outlasts an API server's blip (about 13 minutes in all):
# a Rollout left paused is what the abort is there to prevent.
_CLEANUP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=30,
    non_retryable_error_types=[NON_RETRYABLE_CONFIG],
)

# Releases take turns per environment (workflows/lane.py); older histories did not.
LANES = "lanes"
# The freeze gate as a local activity, re-checked before the first step only if time passed
# since it passed (bench/lanes.py: a lane's hand-over); older histories did neither.
QUICK_HANDOVER = "quick-handover"
# A late "waiting" turn no longer replaces "superseded" (it did, and the release waited forever).
SUPERSEDED_IS_FINAL = "superseded-is-final"
# An automatic rollback proves the ledger's record before re-deploying it (anyone who can write to
# the namespace can signal a ledger); older releases trusted it.
PROVEN_ROLLBACKS = "proven-rollbacks"

# How a failure ends a release that deployed something: the states after which an automatic
# rollback restores the version verified before (a cancel or a rejection is someone's choice).
_ROLLS_BACK = (ReleaseState.failed, ReleaseState.timed_out)
# A canary being restored is promoted to the end; this many promotes at most.
_RESTORE_PROMOTES = 20

# Events kept in a closed release's final-status memo (the history holds them all).
_EVENTS_IN_MEMO = 50

# How a release's end shows on the environment it was in, and in that environment's ledger.
_PHASE_AT_END = {
    ReleaseState.cancelled: Phase.cancelled,
    ReleaseState.rejected: Phase.rejected,
    ReleaseState.timed_out: Phase.timed_out,
    ReleaseState.rolled_back: Phase.rolled_back,
    ReleaseState.superseded: Phase.skipped,  # it never deployed there
}
_LEDGER_AT_END = {
    ReleaseState.cancelled: DeploymentState.cancelled,
    ReleaseState.rejected: DeploymentState.rejected,
    ReleaseState.timed_out: DeploymentState.timed_out,
    ReleaseState.rolled_back: DeploymentState.rolled_back,
    ReleaseState.rollback_failed: DeploymentState.rollback_failed,
}


@dataclass(frozen=True)
class Code:
    """What a step runs with in one environment: the release's own, or a verified deployment's."""

    bundle: BundleRef | None
    base_dir: str
    secrets: dict[str, str]
    version: str


@workflow.defn(name=RELEASE_WORKFLOW)
class ReleaseWorkflow:
    @workflow.init
    def __init__(self, request: ReleaseRequest) -> None:
        self._request = request
        self._board = StatusBoard(
            ReleaseStatus(
                **{
                    **ReleaseRef.of(request.application, request.service, request.version),
                    "release_id": request.release_id,
                },
                initiator=request.initiator,
                run_id=workflow.info().run_id,
                original_run_id=workflow.info().original_execution_run_id,
                environments=_environment_statuses(request.environments),
            )
        )
        # Releases started before registered applications carried their plan; others resolve it in run().
        self._plan = ReleasePlan.carried_by(request)
        self._gates = Gates(self._board, request.initiator, self._rule_context)
        # Outputs of applied steps, per environment, for later steps' templates.
        self._outputs: dict[str, dict[str, str]] = {}
        self._sensitive: dict[str, dict[str, str]] = {}
        self._output_digests: dict[str, dict[str, str]] = {}
        # Per environment, step -> digest of exactly what it applied (the ledger keeps it for rollbacks).
        self._applied: dict[str, dict[str, str]] = {}
        self._applied_keys: dict[str, dict[str, str]] = {}  # and where it is in the artifact store
        self._canary: Canary | None = None  # the canary being driven, which operators may steer
        self._lanes = Lanes(request, self._board)
        self._quick_handover = False  # set from its patch in the first workflow task
        self._proves_records = False  # the same
        # Environments where a step started applying: a failure there may roll back.
        self._touched: set[str] = set()
        # Per environment, the verified deployment being restored (an automatic rollback).
        self._restoring: dict[str, DeploymentRecord] = {}
        self._restored: dict[str, str] = {}  # environment -> version restored there

    @workflow.signal(name=TURN_SIGNAL)
    def turn(self, turn: LaneTurn) -> None:
        """The ledger of an environment answers: this release's turn, or who is ahead."""
        self._lanes.told(turn)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> ReleaseStatus:
        return self._board.status

    @workflow.update(name=DECIDE_UPDATE)
    def decision(self, decision: Decision) -> DecisionRecord:
        """`prodline approve|reject`: who decided is checked, the decision judged against the
        open gate and recorded either way; the answer says whether it counted and why not."""
        return self._gates.decide(decision)

    @decision.validator
    def _decision_fits(self, decision: Decision) -> None:
        # The one refusal left out of history: a flood of decisions would otherwise fill it.
        if len(self._board.status.decisions) >= MAX_DECISIONS:
            raise ApplicationError(f"this release has taken {MAX_DECISIONS} decisions; no more are accepted")

    @workflow.signal(name=DECIDE_SIGNAL)
    def decide(self, decision: Decision) -> None:
        """Decisions from CLIs before they were Updates: judged and recorded the same way."""
        if len(self._board.status.decisions) < MAX_DECISIONS:
            self._gates.decide(decision)

    @workflow.update(name=ROLLOUT_UPDATE)
    async def rollout(self, command: RolloutCommand) -> str:
        """`prodline release promote|abort`: an operator steers the canary, through the release."""
        canary = self._canary
        assert canary is not None  # the validator refused otherwise
        why = f" ({command.reason})" if command.reason else ""
        self._board.event(f"{command.by} asks to {command.action.replace('_', ' ')}{why}", canary.stage.name)
        return await canary.take(command)

    @rollout.validator
    def _rollout_allowed(self, command: RolloutCommand) -> None:
        canary = self._canary
        if canary is None:
            raise ApplicationError(f"the release has no canary in progress: it is {self._board.where()}")
        if canary.stage.verify == "ssh" and command.action != "abort":
            # A promote skips rules people would have to sign for; stopping is always allowed.
            raise ApplicationError(
                f"{canary.stage.name} needs signed decisions (verify: ssh): promoting would skip them; "
                "approve the pause's approval with `prodline approve --key`, or abort"
            )
        refusal = canary.refusal(command)
        if refusal:
            raise ApplicationError(refusal)

    @workflow.run
    async def run(self, request: ReleaseRequest) -> ReleaseStatus:
        # A signed start's initiator is known once it is checked (below), not from the input.
        who = "with a signed start" if request.signed is not None else f"by {request.initiator}"
        self._board.event(f"release of {request.service} {request.version} started {who}")
        current: EnvironmentRun | None = None
        try:
            if workflow.info().workflow_id != request.release_id:
                # One workflow per release: an ID that names another version would run this one
                # next to its own release, or again after it succeeded.
                raise ReleaseStopped(
                    ReleaseState.failed,
                    f"the release cannot start: this workflow's ID is {workflow.info().workflow_id}, but its input "
                    f"releases {request.release_id}; start it with `prodline release start`",
                )
            # Asked here, in the first workflow task: a patch first asked right after a local
            # activity can be asked in another task on replay than it was recorded in.
            self._lanes.used = workflow.patched(LANES)
            self._quick_handover = self._gates.local_rules = workflow.patched(QUICK_HANDOVER)
            self._lanes.superseded_is_final = workflow.patched(SUPERSEDED_IS_FINAL)
            self._proves_records = workflow.patched(PROVEN_ROLLBACKS)
            if workflow.patched(REGISTERED_APPLICATIONS):
                # Whatever the input says about environments or rules is ignored: the plan
                # comes from the registered application and the bundle, on a trusted worker.
                self._board.status.environments = []
                await self._resolve(request)
                self._identify_initiator(request)
            for stage in self._plan.environments:
                stop_if_cancelled()  # before the next environment counts as started
                current = stage
                await self._promote(stage)
                current = None  # done and recorded: a later stop does not touch it
        except ReleaseStopped as stop:
            await self._finish(stop.state, stop.reason, current)
            raise ApplicationError(stop.reason, type=FAILURE_TYPES[stop.state], non_retryable=True) from None
        except asyncio.CancelledError:
            await self._finish(ReleaseState.cancelled, "the release was cancelled", current)
            raise
        await self._finish(ReleaseState.succeeded, "", None)
        return self._board.status

    async def _resolve(self, request: ReleaseRequest) -> None:
        """The plan, from the registered application and the bundle: recorded once, pinned for good.

        A local activity: the control worker runs it inside the workflow task (one marker
        event, no task round trip), as it does the ledger record.
        """
        try:
            plan = await workflow.execute_local_activity(
                RESOLVE_RELEASE,
                request,
                result_type=ReleasePlan,
                start_to_close_timeout=_RESOLVE_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=[NON_RETRYABLE_CONFIG]),
                summary=f"resolve {request.service} {request.version}",
            )
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise asyncio.CancelledError() from exc
            raise ReleaseStopped(ReleaseState.failed, f"the release cannot start: {activity_failure(exc)}") from None
        except ApplicationError as exc:  # how a local activity's last failure arrives
            raise ReleaseStopped(ReleaseState.failed, f"the release cannot start: {exc.message}") from None
        self._plan = plan
        try:
            self._gates.keys = Keyring.of(plan.people)
        except InvalidInput as exc:  # valid when applied, refused by this code: stop, do not retry the task forever
            raise ReleaseStopped(ReleaseState.failed, f"the release cannot start: people: {exc}") from None
        status = self._board.status
        status.environments = _environment_statuses(plan.environments)
        status.revision, status.revision_digest = plan.revision, plan.revision_digest
        status.bundle = plan.service_bundle.digest if plan.service_bundle else ""
        bundle = plan.service_bundle
        code = f"bundle {bundle.short} ({bundle.files} files, {bundle.size:,} bytes)" if bundle else "no bundle"
        self._board.event(
            f"obeys {request.application} revision {plan.revision} "
            f"({plan.revision_digest.removeprefix('sha256:')[:12]}); code: {code}"
        )

    def _identify_initiator(self, request: ReleaseRequest) -> None:
        """A signed start makes its signer the initiator that `forbid_initiator` bans."""
        try:
            parent = workflow.info().parent
            who = identify_initiator(
                request, self._plan, self._gates.keys, workflow.info().start_time, parent.workflow_id if parent else ""
            )
        except Refused as exc:
            raise ReleaseStopped(ReleaseState.failed, f"the release cannot start: {exc}") from None
        if who.verified:
            self._gates.initiator = self._board.status.initiator = who.person
            self._board.status.initiator_verified = who.verified
            self._board.event(f"start signed by {who.person} [{who.verified}]")

    # --- one environment ------------------------------------------------------------

    async def _promote(self, stage: EnvironmentRun) -> None:
        env = self._board.environment(stage.name)
        env.phase, env.started_at = Phase.running, workflow.now()
        workflow.upsert_search_attributes([sa.ENVIRONMENT.value_set(stage.name)])
        self._board.event(f"promoting to {stage.name}", stage.name)
        if self._lanes.used:
            await self._lanes.enter(stage, self._kind)
            env.started_at = workflow.now()  # its deployment there starts with its turn
        if stage.bypassed:
            self._board.event(
                f"{self._kind} by {self._board.status.initiator} skips {', '.join(stage.bypassed)}, as "
                f"{self._request.application} allows in {stage.name}"
                + (f": {self._request.restore.reason}" if self._request.restore else ""),
                stage.name,
            )
        try:
            await self._deploy(stage)
            await self._gates.run_checks(stage, Lifecycle.after_deploy)
        except ReleaseStopped as stop:
            if stage.name in self._touched and stop.state in _ROLLS_BACK:
                if self._request.restore is not None:  # a rollback that failed: the environment needs someone
                    raise ReleaseStopped(
                        ReleaseState.rollback_failed, f"the {self._kind} failed: {stop.reason}"
                    ) from None
                if stage.rollback:
                    await self._roll_back(stage, stop)
            raise
        env.phase, env.finished_at = Phase.succeeded, workflow.now()
        await self._record(stage, DeploymentState.succeeded)
        self._board.event(f"{self._request.version} is live in {stage.name}", stage.name)
        if stage.drift_every is not None:
            await self._check_for_drift(stage, stage.drift_every)

    async def _check_for_drift(self, stage: EnvironmentRun, every: timedelta) -> None:
        """Make sure the environment's drift schedule runs (each verified deployment may change it)."""
        r = self._request
        check = DriftCheck(
            application=r.application, service=r.service, environment=stage.name, every=every, self_heal=stage.self_heal
        )
        try:
            await workflow.execute_local_activity(
                ENSURE_DRIFT_CHECKS,
                check,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"drift checks of {stage.name}",
            )
        except (ActivityError, ApplicationError) as exc:  # the deployment stands; say what is missing
            why = activity_failure(exc) if isinstance(exc, ActivityError) else exc.message
            self._board.event(f"drift checks of {stage.name} could not be scheduled: {why}", stage.name)

    @property
    def _kind(self) -> DeploymentKind:
        return self._request.restore.kind if self._request.restore is not None else "release"

    async def _deploy(self, stage: EnvironmentRun) -> None:
        """Plans, approvals and the steps, each from its approved plan; again from the stale
        step if a plan went stale."""
        applied: set[str] = set()
        for attempt in range(1, MAX_PLANS + 1):
            # Plans come first, so approvers see what they approve. A re-plan after a
            # stale plan resumes at the stale step: steps already applied never run again.
            todo = [s for s in stage.steps if s.name not in applied]
            plans = {
                s.name: await self._plan_step(stage, s)
                for s in todo
                if s.spec.has_plan and not s.spec.reads_step_outputs
            }
            await self._gates.run_checks(stage, Lifecycle.before_approval)
            passed_at = []
            for rule in stage.preconditions:
                await self._gates.hold(stage, rule, rule.on_failure, f"precondition {rule.label}")
                passed_at.append(workflow.now())
            await self._gates.run_checks(stage, Lifecycle.before_deploy)
            for rule, passed in zip(stage.preconditions, passed_at, strict=True):
                # Re-checked if it may have stopped holding since it passed (people approved, a soak
                # ran...); passed in this very workflow task, it would answer the same again.
                if rule.spec.recheck_before_deploy and (workflow.now() > passed or not self._quick_handover):
                    await self._gates.hold(stage, rule, rule.on_failure, f"precondition {rule.label} (re-check)")
            try:
                await self._apply_steps(stage, todo, plans, applied)
                return
            except StalePlan as stale:
                if stale.step.spec.stale_plan_policy == "fail" or attempt == MAX_PLANS:
                    self._step_status(stage, stale.step).phase = Phase.failed
                    raise ReleaseStopped(
                        ReleaseState.failed, f"{stage.name}: step {stale.step.name}: {stale.reason}"
                    ) from None
                self._board.event(f"{stale.reason}; planning again and asking for approval again", stage.name)

    async def _apply_steps(
        self, stage: EnvironmentRun, steps: list[Step], plans: dict[str, StepResult], applied: set[str]
    ) -> None:
        for step in steps:
            if step.spec.has_plan and step.name not in plans:  # its plan needs an earlier step's outputs
                plans[step.name] = await self._plan_step(stage, step)
            await self._apply_step(stage, step, plans.get(step.name))
            applied.add(step.name)

    # --- automatic rollback ----------------------------------------------------------

    async def _roll_back(self, stage: EnvironmentRun, failure: ReleaseStopped) -> None:
        """Re-deploy what was verified here before, as the ledger recorded it, and end the release."""
        live = self._lanes.live(stage.name)
        if live is None or not live.redeployable:
            why = (
                "nothing was verified there before"
                if live is None
                else f"{live.version} was recorded before prodline recorded what rollbacks need"
            )
            self._board.event(f"no automatic rollback in {stage.name}: {why}", stage.name)
            raise ReleaseStopped(failure.state, f"{failure.reason}; not rolled back: {why}") from None
        if self._proves_records:
            await self._prove(stage, live, failure)
        self._board.event(f"{failure.reason}; rolling back {stage.name} to {live.version}", stage.name)
        restore = stage.model_copy(update={"steps": live.steps, "parameters": live.parameters})
        self._restoring[stage.name] = live
        self._reset_outputs(stage.name)
        started = workflow.now()
        self._board.environment(stage.name).steps += [
            StepStatus(name=f"rollback: {s.name}", kind=s.kind) for s in live.steps
        ]
        try:
            await self._apply_steps(restore, live.steps, {}, set())
            self._board.event(f"{live.version} re-deployed; checking it again", stage.name)
            await self._gates.run_checks(restore, Lifecycle.after_deploy)
        except (ReleaseStopped, StalePlan) as exc:
            reason = exc.reason
            self._restored[stage.name] = live.version
            raise ReleaseStopped(
                ReleaseState.rollback_failed,
                f"{failure.reason}; the rollback to {live.version} failed too: {reason}",
            ) from None
        self._restored[stage.name] = live.version
        await self._record_restored(stage, live, started)
        self._board.event(f"{live.version} is live again in {stage.name}", stage.name)
        raise ReleaseStopped(ReleaseState.rolled_back, f"{failure.reason}; rolled back to {live.version}")

    async def _prove(self, stage: EnvironmentRun, live: DeploymentRecord, failure: ReleaseStopped) -> None:
        """The record is one its release recorded, or the environment needs someone: nothing else is re-deployed."""
        try:
            await workflow.execute_local_activity(
                PROVE_RECORD,
                live,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=[UNPROVEN_RECORD]),
                summary=f"prove the record of {live.version} in {stage.name}",
            )
        except (ActivityError, ApplicationError) as exc:
            why = activity_failure(exc) if isinstance(exc, ActivityError) else exc.message
            self._board.event(f"not rolled back: {why}", stage.name)
            raise ReleaseStopped(ReleaseState.rollback_failed, f"{failure.reason}; not rolled back: {why}") from None

    async def _record_restored(self, stage: EnvironmentRun, live: DeploymentRecord, started: datetime) -> None:
        """The restored version is what runs there now: recorded as verified again (this release
        still holds the lane; its own record, rolled_back, frees it)."""
        record = live.model_copy(
            update={
                "release_id": self._request.release_id,
                "started_at": started,
                "finished_at": workflow.now(),
                "kind": "rollback",
                "by": "prodline (automatic rollback)",
                "reason": f"restored after {self._request.version} failed",
                "applied": self._applied.get(stage.name, {}),
                "applied_keys": self._applied_keys.get(stage.name, {}),
                # Where and under which revision it ran now (the code is the verified deployment's).
                "env": stage.env,
                "task_queue": stage.task_queue,
                "revision": self._plan.revision,
                "approved_by": [],
                "bypassed": [],
                "leaves_lane": False,
            }
        )
        await self._send_record(record)

    def _reset_outputs(self, environment: str) -> None:
        for outputs in (self._outputs, self._sensitive, self._output_digests, self._applied, self._applied_keys):
            outputs.pop(environment, None)

    def _step_status(self, stage: EnvironmentRun, step: Step) -> StepStatus:
        prefix = "rollback: " if stage.name in self._restoring else ""
        return self._board.step(stage.name, prefix + step.name)

    @property
    def _restores(self) -> bool:
        """Whether this whole release re-deploys a verified version (a rollback or a heal)."""
        return self._request.restore is not None

    async def _plan_step(self, stage: EnvironmentRun, step: Step) -> StepResult:
        status = self._step_status(stage, step)
        result = await self._step_activity(PLAN_STEP, stage, step, f"{stage.name}: plan {step.name}")
        status.plan, status.summary = result.output, result.summary
        status.plan_digest = plan_digest(result)
        headline = f"plan of {step.name}" + (f": {result.summary}" if result.summary else "")
        self._board.event(headline + (f"\n{result.output}" if result.output else ""), stage.name)
        return result

    async def _apply_step(self, stage: EnvironmentRun, step: Step, planned: StepResult | None) -> None:
        stop_if_cancelled()  # before the step counts as started
        status = self._step_status(stage, step)
        status.phase = Phase.running
        restoring = self._restores or stage.name in self._restoring
        self._touched.add(stage.name)
        self._board.event(f"step {step.name} started" + (" (restoring)" if restoring else ""), stage.name)
        # A canary is aborted on every way out, from the moment its Rollout may have been sent.
        # A verified version being restored is not a canary: it goes straight back.
        canary = self._canary_of(stage, step, planned) if step.spec.drives_pauses and not restoring else None
        try:
            result = await self._step_activity(
                APPLY_STEP, stage, step, f"{stage.name}: {step.name} ({step.kind})", planned
            )
        except ReleaseStopped as stop:
            status.phase = Phase.failed
            if canary is not None:
                raise await canary.stopped(stop) from None
            raise
        except StalePlan:
            status.phase = Phase.pending  # refused before anything was applied
            raise
        except asyncio.CancelledError:
            status.phase = Phase.cancelled
            if canary is not None:
                await canary.abort("the release was cancelled")
            raise
        if result.applied_digest:
            self._applied.setdefault(stage.name, {})[step.name] = result.applied_digest
        if result.applied_key:
            self._applied_keys.setdefault(stage.name, {})[step.name] = result.applied_key
        if step.spec.waits:
            status.summary, status.output = result.summary, result.output
            self._board.event(f"step {step.name} applied: {result.summary}; waiting until healthy", stage.name)
            try:
                progress = await self._settle(stage, step, result, canary)
            except (ReleaseStopped, asyncio.CancelledError) as stop:
                status.phase = Phase.cancelled if isinstance(stop, asyncio.CancelledError) else Phase.failed
                raise
            result = result.model_copy(update={"summary": f"{result.summary}; {progress.message}".strip("; ")})
        status.phase, status.summary, status.output = Phase.succeeded, result.summary, result.output
        outputs = self._outputs.setdefault(stage.name, {})
        sensitive = self._sensitive.setdefault(stage.name, {})
        for key, value in result.outputs.items():
            outputs[f"{outputs_prefix(step.name)}{key}"] = value
        for key in result.sensitive_outputs:
            sensitive[f"{outputs_prefix(step.name)}{key}"] = result.outputs_key or ""
        if result.outputs_key and result.outputs_digest:
            self._output_digests.setdefault(stage.name, {})[result.outputs_key] = result.outputs_digest
        self._board.event(f"step {step.name} succeeded" + (f": {result.summary}" if result.summary else ""), stage.name)

    async def _settle(
        self, stage: EnvironmentRun, step: Step, applied: StepResult, canary: Canary | None
    ) -> StepProgress:
        """Wait until what the step applied is healthy: a separate activity, so a worker that
        dies while waiting is replaced by one that waits again and applies nothing. A canary
        is driven pause by pause (``canary.py``)."""
        if canary is None:
            run = self._step_run(stage, step, applied=applied)
            call = self._progress_call(stage, step)
            progress = await call(WAIT_STEP, run, f"{stage.name}: {step.name} healthy?", False)
            for _ in range(_RESTORE_PROMOTES):
                if progress.done or not progress.paused:
                    break
                # Restoring a verified version: nothing is left to verify at the canary's pauses.
                action = StepAction(run=run, at=progress, full=True, reason="restoring a verified version")
                await call(PROMOTE_STEP, action, f"{stage.name}: {step.name} promote", False)
                progress = await call(WAIT_STEP, run, f"{stage.name}: {step.name} healthy?", False)
            return progress
        canary.run = canary.run.model_copy(update={"applied": applied})
        self._canary = canary
        try:
            progress = await canary.drive()
        except BaseException:
            canary.close("the release had already stopped the canary (aborted); nothing else was done")
            raise
        finally:
            self._canary = None
        canary.close("the canary had already finished; nothing was done")
        return progress

    def _canary_of(self, stage: EnvironmentRun, step: Step, planned: StepResult | None) -> Canary:
        run = self._step_run(stage, step, plan=planned)
        return Canary(stage, step, run, self._board, self._gates, self._progress_call(stage, step))

    def _progress_call(self, stage: EnvironmentRun, step: Step) -> StepCall:
        """Calls the step's wait, promote and abort activities."""

        async def call(activity: str, arg: StepRun | StepAction, summary: str, cleanup: bool) -> StepProgress:
            return await self._step_activity(
                activity, stage, step, summary, arg=arg, result_type=StepProgress, cleanup=cleanup
            )

        return call

    async def _step_activity(
        self,
        activity: str,
        stage: EnvironmentRun,
        step: Step,
        summary: str,
        planned: StepResult | None = None,
        *,
        arg: StepRun | StepAction | None = None,
        result_type: type[T] = StepResult,  # type: ignore[assignment]  # the default matches the default arg
        cleanup: bool = False,
    ) -> T:
        if not cleanup:  # a cleanup (aborting a canary) is what a cancelled release still does
            stop_if_cancelled()
        try:
            return await workflow.execute_activity(
                activity,
                arg or self._step_run(stage, step, plan=planned),
                result_type=result_type,
                start_to_close_timeout=step.timeout,
                heartbeat_timeout=step.heartbeat_timeout,
                retry_policy=_CLEANUP_RETRY
                if cleanup
                else RetryPolicy(
                    maximum_attempts=step.retry.attempts,
                    initial_interval=step.retry.initial_interval,
                    backoff_coefficient=step.retry.backoff,
                    maximum_interval=step.retry.max_interval,
                    non_retryable_error_types=[NON_RETRYABLE_CONFIG, STALE_PLAN],
                ),
                # Wait until the child process is really gone before reporting "cancelled".
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=summary,
                task_queue=stage.task_queue or None,  # the environment's own workers, if it names them
            )
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise asyncio.CancelledError() from exc
            if isinstance(exc.cause, ApplicationError) and exc.cause.type == STALE_PLAN:
                raise StalePlan(step, exc.cause.message) from None
            reason = f"{stage.name}: step {step.name} failed: {activity_failure(exc)}"
            raise ReleaseStopped(ReleaseState.failed, reason) from None

    # --- bookkeeping ------------------------------------------------------------------

    def _step_run(
        self, stage: EnvironmentRun, step: Step, *, plan: StepResult | None = None, applied: StepResult | None = None
    ) -> StepRun:
        restoring = self._restores or stage.name in self._restoring
        return StepRun(context=self._step_context(stage), step=step, plan=plan, applied=applied, restoring=restoring)

    def _step_context(self, stage: EnvironmentRun) -> RunContext:
        live = self._restoring.get(stage.name)
        if live is not None:  # an automatic rollback runs the verified deployment's code, as recorded
            code = Code(live.service_bundle, live.service_dir, live.secrets, live.version)
        else:
            code = Code(self._plan.service_bundle, self._plan.service_dir, self._plan.secrets, self._request.version)
        return self._context(stage, code)

    def _rule_context(self, stage: EnvironmentRun) -> RunContext:
        live = self._restoring.get(stage.name)
        version = live.version if live is not None else self._request.version
        return self._context(
            stage, Code(self._plan.application_bundle, self._plan.application_dir, self._plan.secrets, version)
        )

    def _context(self, stage: EnvironmentRun, code: Code) -> RunContext:
        r = self._request
        return RunContext(
            **{**self._ref(), "version": code.version},
            environment=stage.name,
            initiator=r.initiator,
            bundle=code.bundle,
            base_dir=code.base_dir,
            parameters=stage.parameters,
            secrets=code.secrets,
            env=stage.env,
            run_id=workflow.info().run_id,
            outputs=self._outputs.get(stage.name, {}),
            sensitive_outputs=self._sensitive.get(stage.name, {}),
            output_digests=self._output_digests.get(stage.name, {}),
        )

    def _ref(self) -> dict[str, Any]:
        r = self._request
        return {**ReleaseRef.of(r.application, r.service, r.version), "release_id": r.release_id}

    async def _record(self, stage: EnvironmentRun, state: DeploymentState, reason: str = "") -> None:
        """Tell the environment's ledger how this deployment ended, with all a rollback needs
        to deploy it again exactly (on the ledger, this also frees the lane)."""
        r = self._request
        started = self._board.environment(stage.name).started_at or workflow.now()
        decisions = self._board.status.decisions
        record = DeploymentRecord(
            **self._ref(),
            environment=stage.name,
            state=state,
            started_at=started,
            finished_at=workflow.now(),
            reason=r.restore.reason if r.restore is not None and not reason else reason,
            bundle=self._plan.service_bundle.digest if self._plan.service_bundle else "",
            revision=self._plan.revision,
            parameters=stage.parameters,
            applied=self._applied.get(stage.name, {}) if stage.name not in self._restoring else {},
            applied_keys=self._applied_keys.get(stage.name, {}) if stage.name not in self._restoring else {},
            env=stage.env,
            task_queue=stage.task_queue,
            service_bundle=self._plan.service_bundle,
            service_dir=self._plan.service_dir,
            secrets=self._plan.secrets,
            steps=stage.steps,
            kind=self._kind,
            by=self._board.status.initiator,
            approved_by=[
                d.by for d in decisions if d.environment == stage.name and d.accepted and d.verdict is Verdict.approve
            ],
            bypassed=stage.bypassed,
            restored=self._restored.get(stage.name, ""),
        )
        await self._send_record(record)
        self._lanes.recorded(stage.name)

    async def _send_record(self, record: DeploymentRecord) -> None:
        # A local activity: it runs inside the workflow task (one marker event, no extra task
        # round trip), which matters on a release's hot path.
        await workflow.execute_local_activity(
            RECORD_DEPLOYMENT,
            record,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )

    async def _finish(self, state: ReleaseState, reason: str, current: EnvironmentRun | None) -> None:
        status = self._board.status
        status.state, status.reason = state, reason
        if current is not None and status.environment(current.name).phase is Phase.succeeded:
            current = None  # recorded as verified already: a late cancel does not undo that
        if current is not None:
            env = status.environment(current.name)
            env.phase = _PHASE_AT_END.get(state, Phase.failed)
            env.finished_at, env.waiting_on = workflow.now(), ""
            if self._lanes.holding == current.name or not self._lanes.used:
                await self._record(current, _LEDGER_AT_END.get(state, DeploymentState.failed), reason)
            else:  # it never had its turn there: nothing was deployed, nothing to record
                await self._lanes.leave(current.name)
        for env in status.environments:
            if env.phase is Phase.pending:
                env.phase = Phase.skipped
        self._board.event(f"release {state.value}" + (f": {reason}" if reason else ""))
        workflow.upsert_search_attributes([sa.STATE.value_set(state.value)])
        if workflow.patched("final-status-memo"):
            # Queries need a worker; a closed release's status must be readable without one.
            # The memo travels with every visibility row: the last events are enough there.
            kept = status.model_copy(update={"events": status.events[-_EVENTS_IN_MEMO:]})
            workflow.upsert_memo({FINAL_STATUS_MEMO: kept})
        workflow.set_current_details(markdown(status))


def plan_digest(result: StepResult) -> str:
    """What approving a plan signs: the saved plan's digest, else what the plan showed."""
    if result.digest:
        return result.digest if result.digest.startswith("sha256:") else f"sha256:{result.digest}"
    shown = f"{result.summary}\n{result.output}"
    return "sha256:" + hashlib.sha256(shown.encode()).hexdigest()


def _environment_statuses(environments: list[EnvironmentRun]) -> list[EnvironmentStatus]:
    return [
        EnvironmentStatus(
            name=env.name, task_queue=env.task_queue, steps=[StepStatus(name=s.name, kind=s.kind) for s in env.steps]
        )
        for env in environments
    ]
