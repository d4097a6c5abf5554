"""The real release workflow, with scripted activities registered under their real names.

As temporalio/samples-python tests activities (``tests/hello/hello_activity_test.py``):
the workflow code and the Temporal server are the real ones; only what would touch the
world answers from a script the test writes. No shell and no Terraform, so a release takes
well under a second, and branches that shell scripts reach only by contraption (a plan
stale three times over, a check failing exactly N times in a row) are one line of script.

The plan is resolved before the workflow starts (from the test's own files, as the resolve
activity would from a registered application and a bundle) and handed back by a scripted
``resolve_release``: these tests are about what the workflow does with a plan.

The ledger activity is the real one: releases record into real ledger workflows, and the
tests read back what a user (or the ``stable`` rule) would read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

from prodline.activities.ledger import LedgerActivities
from prodline.config.release import ReleasePlan, ReleaseRequest
from prodline.contracts import (
    ABORT_STEP,
    APPLY_STEP,
    EVALUATE_RULE,
    FAILURE_TYPES,
    FETCH_STEP,
    PLAN_STEP,
    PROMOTE_STEP,
    RESOLVE_RELEASE,
    ROLLOUT_UPDATE,
    STALE_PLAN,
    WAIT_STEP,
    Decision,
    DecisionRecord,
    DeploymentRecord,
    Outcome,
    ReleaseState,
    ReleaseStatus,
    RolloutCommand,
    RuleResult,
    RuleRun,
    StepAction,
    StepProgress,
    StepResult,
    StepRun,
    Verdict,
)
from prodline.identity.documents import Signed
from prodline.workers.sandbox import WORKFLOW_RUNNER
from prodline.workflows.ledger import DeploymentLedgerWorkflow
from prodline.workflows.release import ReleaseWorkflow

from conftest import read_ledgers  # tests/conftest.py

# --- answers the scripted activities give ----------------------------------------------------


def passed(reason: str = "ok") -> RuleResult:
    return RuleResult(outcome=Outcome.passed, reason=reason)


def failed(reason: str = "error rate 5%") -> RuleResult:
    return RuleResult(outcome=Outcome.failed, reason=reason)


def inconclusive(reason: str = "no data") -> RuleResult:
    return RuleResult(outcome=Outcome.inconclusive, reason=reason)


def stale(reason: str = "the approved plan is stale: the state changed after it was made") -> ApplicationError:
    """What a step's apply raises when its saved plan no longer matches the state."""
    return ApplicationError(reason, type=STALE_PLAN, non_retryable=True)


# An answer: a result, an exception to raise, or a coroutine function whose result is the answer.
Answer = RuleResult | StepResult | StepProgress | BaseException | Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Call:
    """One activity the workflow ran (``plan``, ``apply``, ``fetch``, ``wait``, ``promote``, ``abort`` or
    ``evaluate``), where, of what."""

    action: str
    environment: str
    name: str


class Script:
    """What the mocked activities answer, and the calls they received, in order.

    ``script.on("evaluate", "smoke", failed(), failed(), passed())`` answers the rule named
    ``smoke`` with those results in turn; the last answer repeats. Steps and rules without a
    script succeed (a plan and an apply with a summary and output naming the step).
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._answers: dict[tuple[str, str, str], list[Answer]] = {}
        self._asked: dict[tuple[str, str, str], int] = {}
        self.actions: list[StepAction] = []  # what promote and abort were asked, in order

    def on(self, action: str, name: str, *answers: Answer, environment: str = "*") -> Script:
        assert action in ("plan", "apply", "fetch", "wait", "promote", "abort", "evaluate") and answers
        self._answers[(action, environment, name)] = list(answers)
        return self

    def ran(self, action: str, environment: str | None = None) -> list[str]:
        """Names the workflow ran ``action`` for, in order (in one environment, or all)."""
        return [c.name for c in self.calls if c.action == action and environment in (None, c.environment)]

    def count(self, action: str, name: str, environment: str | None = None) -> int:
        return self.ran(action, environment).count(name)

    async def _answer(self, action: str, environment: str, name: str, default: Answer) -> Any:
        self.calls.append(Call(action, environment, name))
        key = next((k for k in ((action, environment, name), (action, "*", name)) if k in self._answers), None)
        if key is None:
            answer = default
        else:
            asked = self._asked.get(key, 0)
            self._asked[key] = asked + 1
            answers = self._answers[key]
            answer = answers[min(asked, len(answers) - 1)]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return await answer()
        return answer

    # The activities, under the names the workflow calls them by.

    @activity.defn(name=PLAN_STEP)
    async def plan_step(self, run: StepRun) -> StepResult:
        name = run.step.name
        default = StepResult(summary=f"1 to change ({name})", output=f"~ {name} will be updated")
        return await self._answer("plan", run.context.environment, name, default)

    @activity.defn(name=APPLY_STEP)
    async def apply_step(self, run: StepRun) -> StepResult:
        name, environment = run.step.name, run.context.environment
        default = StepResult(summary=f"{name} applied", output=f"{name}: applied in {environment}")
        return await self._answer("apply", environment, name, default)

    @activity.defn(name=FETCH_STEP)
    async def fetch_step(self, run: StepRun) -> StepResult:
        default = StepResult(summary="in sync", changed=False)
        return await self._answer("fetch", run.context.environment, run.step.name, default)

    @activity.defn(name=WAIT_STEP)
    async def wait_step(self, run: StepRun) -> StepProgress:
        return await self._answer(
            "wait", run.context.environment, run.step.name, StepProgress(done=True, message="healthy")
        )

    @activity.defn(name=PROMOTE_STEP)
    async def promote_step(self, action: StepAction) -> StepProgress:
        self.actions.append(action)
        default = StepProgress(message="promoted")
        return await self._answer("promote", action.run.context.environment, action.run.step.name, default)

    @activity.defn(name=ABORT_STEP)
    async def abort_step(self, action: StepAction) -> StepProgress:
        self.actions.append(action)
        default = StepProgress(message="aborted")
        return await self._answer("abort", action.run.context.environment, action.run.step.name, default)

    @activity.defn(name=EVALUATE_RULE)
    async def evaluate_rule(self, run: RuleRun) -> RuleResult:
        return await self._answer("evaluate", run.context.environment, run.rule.label, passed())


# --- running releases ------------------------------------------------------------------------------


@dataclass
class Finished:
    """A release that ended: its final status and what each environment's ledger recorded."""

    status: ReleaseStatus
    ledgers: dict[str, list[DeploymentRecord]] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.status.state.value

    @property
    def reason(self) -> str:
        return self.status.reason

    @property
    def phases(self) -> dict[str, str]:
        return {e.name: e.phase.value for e in self.status.environments}

    def steps(self, environment: str) -> dict[str, str]:
        """Step name -> its phase in one environment."""
        return {s.name: s.phase.value for s in self.status.environment(environment).steps}

    def ledger(self, environment: str) -> list[tuple[str, str]]:
        """(version, state) of each deployment the environment's ledger recorded."""
        return [(r.version, r.state.value) for r in self.ledgers[environment]]

    @property
    def events(self) -> list[str]:
        return [e.message for e in self.status.events]

    @property
    def decisions(self) -> list[tuple[str, bool, str]]:
        """(who, accepted, why refused) of every decision sent, in order."""
        return [(d.by, d.accepted, d.reason) for d in self.status.decisions]


@dataclass(frozen=True)
class Planned:
    """A release as `release start` asks for it, and the plan a worker would resolve it to."""

    request: ReleaseRequest
    plan: ReleasePlan

    def resolver(self) -> Callable[..., Any]:
        @activity.defn(name=RESOLVE_RELEASE)
        async def resolve_release(request: ReleaseRequest) -> ReleasePlan:
            return self.plan

        return resolve_release


class Running:
    """A release in flight on its own worker: query it, decide on it, wait for its end."""

    def __init__(self, client: Client, handle: WorkflowHandle[Any, Any], planned: Planned):
        self.client, self.handle, self.planned = client, handle, planned
        self.request = planned.request

    async def status(self) -> ReleaseStatus:
        return await self.handle.query(ReleaseWorkflow.status)

    async def until(
        self, predicate: Callable[[ReleaseStatus], object], what: str, timeout: float = 10
    ) -> ReleaseStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = await self.status()
            if predicate(status):
                return status
            if loop.time() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; the release is {status.state.value} {status.reason}"
                )
            await asyncio.sleep(0.02)

    async def waiting_on(self, environment: str, text: str = "") -> ReleaseStatus:
        """Until the environment waits on something whose description contains ``text``."""

        def waits(status: ReleaseStatus) -> bool:
            env = next((e for e in status.environments if e.name == environment), None)  # none before the plan
            return env is not None and env.phase.value == "waiting" and text in env.waiting_on

        return await self.until(waits, f"{environment} to wait on {text!r}")

    async def decide(
        self,
        by: str,
        verdict: Verdict = Verdict.approve,
        environment: str = "production",
        comment: str = "",
        signed: Signed | None = None,
    ) -> DecisionRecord:
        """Send a decision as `prodline approve|reject` does (an Update), and return how the release judged it."""
        decision = Decision(
            request_id=uuid.uuid4().hex, environment=environment, by=by, verdict=verdict, comment=comment, signed=signed
        )
        return await self.handle.execute_update(ReleaseWorkflow.decision, decision)

    async def steer(self, action: str, by: str = "ops", reason: str = "") -> str:
        """`prodline release promote|abort`: the rollout Update, answered with what was done."""
        command = RolloutCommand(action=action, by=by, reason=reason)  # type: ignore[arg-type]  # tests pass any
        return await self.handle.execute_update(ROLLOUT_UPDATE, command, result_type=str)

    async def saw(self, event_type: EventType.ValueType) -> None:
        """Until the release's history holds an event of this type (``EventType.EVENT_TYPE_...``)."""
        for _ in range(500):
            if any(e.event_type == event_type for e in (await self.handle.fetch_history()).events):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {EventType.Name(event_type)} in the history of {self.handle.id}")

    async def finish(self, timeout: float = 30) -> Finished:
        """Wait for the end; check it ends the way the CLI maps to exit codes; read the ledgers."""
        try:
            await asyncio.wait_for(self.handle.result(), timeout)
            error = None
        except WorkflowFailureError as exc:
            error = exc.cause
        except TimeoutError:
            status = await self.status()
            waits = "; ".join(f"{e.name} waits on {e.waiting_on}" for e in status.environments if e.waiting_on)
            raise AssertionError(
                f"the release did not end within {timeout:g}s: {status.state.value}; {waits}"
            ) from None
        status = await self.status()
        if status.state is ReleaseState.succeeded:
            assert error is None, error
        elif status.state is ReleaseState.cancelled:
            assert isinstance(error, CancelledError), error
        else:
            assert isinstance(error, ApplicationError), error
            assert (error.type, error.message) == (FAILURE_TYPES[status.state], status.reason)
        environments = [e.name for e in self.planned.plan.environments]
        records = await read_ledgers(self.client, self.request.application, self.request.service, environments)
        return Finished(status, dict(zip(environments, records, strict=True)))


class Releases:
    """Starts releases of one test's application, each on a fresh worker and task queue."""

    def __init__(self, client: Client):
        self.client = client

    @asynccontextmanager
    async def running(self, planned: Planned, script: Script, workflow_id: str | None = None) -> AsyncIterator[Running]:
        task_queue = f"wf-{uuid.uuid4().hex[:8]}"
        activities: Iterable[Callable[..., Any]] = (
            script.plan_step,
            script.apply_step,
            script.fetch_step,
            script.wait_step,
            script.promote_step,
            script.abort_step,
            script.evaluate_rule,
            planned.resolver(),
            LedgerActivities(self.client).record_deployment,
            LedgerActivities(self.client).lane_request,
        )
        async with Worker(
            self.client,
            task_queue=task_queue,
            workflows=[ReleaseWorkflow, DeploymentLedgerWorkflow],
            workflow_runner=WORKFLOW_RUNNER,
            activities=list(activities),
        ):
            handle = await self.client.start_workflow(
                ReleaseWorkflow.run,
                planned.request,
                id=workflow_id or planned.request.release_id,
                task_queue=task_queue,
            )
            try:
                yield Running(self.client, handle, planned)
            finally:
                # A test that failed midway leaves nothing running on the session's server.
                if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                    await handle.terminate("the test is over")

    async def run(self, planned: Planned, script: Script) -> Finished:
        """Run a release that needs nobody to its end."""
        async with self.running(planned, script) as running:
            return await running.finish()


CANCEL_REQUESTED = EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED
