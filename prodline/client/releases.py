"""The release client: start or attach, follow, cancel, decide, list and read ledgers.

Everything here speaks to Temporal only; the release workflow, its query and its
Update are called by the names in :mod:`prodline.contracts`, with their payload
types given, rather than through the workflow class: importing the class would
import the workflow's own code (gates, signature checks, ``temporalio.workflow``),
which costs every CLI command hundreds of milliseconds of start-up for nothing a
client runs. For the same reason what only some commands need (ledgers, listing,
history, workers) is imported where it is used. Errors are
:mod:`prodline.errors` types, so every caller (the CLI, tests, benchmarks)
gets the same message and exit code.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from prodline.contracts import (
    DECIDE_UPDATE,
    FAILURE_TYPES,
    RELEASE_WORKFLOW,
    ROLLOUT_UPDATE,
    STATUS_QUERY,
    Decision,
    DecisionRecord,
    DeploymentRecord,
    Phase,
    ReleaseState,
    ReleaseStatus,
    RolloutCommand,
    Verdict,
)
from prodline.errors import InvalidInput, NotFound, Unavailable, WrongState
from prodline.identity.documents import DecisionDocument, Signed
from prodline.workers.connect import connect, task_queue, ui_url
from prodline.workflows import search_attributes as sa

T = TypeVar("T")

if TYPE_CHECKING:
    from prodline.config.release import ReleaseRequest

    from .listing import ListedRelease
    from .setup import Setup
    from .signatures import Signer

# How long a worker has to judge a decision before the CLI gives up waiting for the verdict.
CONFIRM_SECONDS = 15

_STATE_BY_FAILURE_TYPE = {v: k for k, v in FAILURE_TYPES.items()}
# How a release that Temporal itself ended shows.
_ENDED = {
    WorkflowExecutionStatus.COMPLETED: (ReleaseState.succeeded, ""),
    WorkflowExecutionStatus.CANCELED: (ReleaseState.cancelled, "the release was cancelled"),
    WorkflowExecutionStatus.TIMED_OUT: (ReleaseState.timed_out, "the release exceeded its execution timeout"),
    WorkflowExecutionStatus.TERMINATED: (ReleaseState.failed, "the release was terminated in Temporal"),
}

# The release workflow by name (RELEASE_WORKFLOW), its result read as a ReleaseStatus.
Handle = WorkflowHandle[Any, ReleaseStatus]


@dataclass(frozen=True)
class Started:
    """What ``start`` did: started the release, attached to it running, or found it released already."""

    release_id: str
    run_id: str | None
    how: Literal["started", "attached", "already-released"]
    task_queue: str
    config_changed: bool = False  # attached to (or found) a release started with another config
    closed_at: datetime | None = None  # already-released: when it succeeded


@dataclass(frozen=True)
class Outcome:
    """Where a release stands, from Temporal alone (no worker needed)."""

    release_id: str
    state: ReleaseState
    reason: str
    description: WorkflowExecutionDescription

    @property
    def running(self) -> bool:
        return self.description.status == WorkflowExecutionStatus.RUNNING


@dataclass(frozen=True)
class View:
    """A release as ``release status`` shows it: state and reason, and its status if anything told it."""

    outcome: Outcome
    state: ReleaseState
    reason: str
    status: ReleaseStatus | None


@dataclass(frozen=True)
class Progress:
    """One look at a release being followed; ``outcome`` is set on the last one, once it has ended."""

    description: WorkflowExecutionDescription
    status: ReleaseStatus | None
    outcome: Outcome | None = None


@dataclass(frozen=True)
class DecisionTarget:
    """A release waiting for a decision in one environment, with the status an approver should see."""

    release_id: str
    environment: str
    status: ReleaseStatus = field(repr=False)
    run_id: str = ""  # the workflow run the status is of: a decision is sent to that run only

    def document(self, verdict: Verdict, comment: str, signer: Signer) -> DecisionDocument:
        """What an approver signs: exactly what they were shown (this status), nothing read again."""
        subject = self.status.decision_subject(self.environment)  # what the release will compare
        return signer.document(DecisionDocument, verdict=verdict.value, comment=comment, **subject)


class ReleaseClient:
    """prodline's view of a Temporal namespace: releases, their decisions and ledgers."""

    def __init__(self, client: Client, queue: str | None = None):
        self.temporal = client
        self.task_queue = task_queue(queue)

    @classmethod
    async def connect(
        cls, address: str | None = None, namespace: str | None = None, queue: str | None = None
    ) -> ReleaseClient:
        return cls(await connect(address, namespace), queue)

    def ui_url(self, release_id: str | None = None) -> str | None:
        return ui_url(self.temporal.service_client.config.target_host, self.temporal.namespace, release_id)

    def handle(self, release_id: str, run_id: str | None = None) -> Handle:
        return self.temporal.get_workflow_handle(release_id, run_id=run_id, result_type=ReleaseStatus)

    # --- starting ---------------------------------------------------------------------

    async def start(self, request: ReleaseRequest) -> Started:
        """Start the release's workflow, or attach to it if it runs already.

        One workflow per service version. A retried CI job attaches to the running
        release (USE_EXISTING); a new run is allowed only after a failed one
        (ALLOW_DUPLICATE_FAILED_ONLY), so a succeeded version is not released twice.
        """
        try:
            handle: Handle = await self.temporal.start_workflow(
                RELEASE_WORKFLOW,
                request,
                result_type=ReleaseStatus,
                id=request.release_id,
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.APPLICATION, request.application),
                        SearchAttributePair(sa.SERVICE, request.service),
                        SearchAttributePair(sa.VERSION, request.version),
                        SearchAttributePair(sa.STATE, ReleaseState.running.value),
                    ]
                ),
                memo={"digest": request.digest, "initiator": request.initiator},
                static_summary=f"{request.service} {request.version} by {request.initiator}"[:200],
            )
        except WorkflowAlreadyStartedError:
            desc = await self.handle(request.release_id).describe()
            return Started(
                request.release_id,
                desc.run_id,
                "already-released",
                desc.task_queue,
                await _config_changed(desc, request),
                desc.close_time,
            )
        except RPCError as exc:
            from . import setup

            await setup.raise_if_not_set_up(self.temporal, exc)
            raise
        # The SDK does not expose "started or attached" publicly; its start response does.
        response = getattr(handle, "_start_workflow_response", None)
        if getattr(response, "started", True):
            return Started(request.release_id, handle.result_run_id, "started", self.task_queue)
        desc = await handle.describe()
        return Started(
            request.release_id, handle.result_run_id, "attached", desc.task_queue, await _config_changed(desc, request)
        )

    async def rollback(
        self,
        application: str,
        service: str,
        environment: str,
        to: str | None,
        reason: str,
        by: str,
        signer: Signer | None = None,
    ) -> Started:
        """Start a rollback release: ``to`` (or the version verified there before the live one),
        re-deployed exactly as the ledger recorded it. The workflow checks the ledger again
        itself; this only picks the version and asks. With a ``signer``, the start is signed
        (a StartDocument naming the rollback, the recorded bundle and the reason), as
        applications with ``signed_starts`` require."""
        from prodline.config.release import ReleaseRequest, RestoreOrder
        from prodline.identity.documents import StartDocument

        from .lanes import lanes_of

        # An unknown application or environment (or a service the application does not list)
        # is named as such, not taken for one where nothing was verified.
        await lanes_of(self.temporal, application, service, environment)
        records = await self.ledger(application, service, environment)
        version = _rollback_target(records, service, environment, to)
        order = RestoreOrder(environment=environment, kind="rollback", reason=reason, nonce=uuid.uuid4().hex[:12])
        request = ReleaseRequest(application=application, service=service, version=version, initiator=by, restore=order)
        if signer is not None:
            verified = [r for r in records if r.version == version and r.redeployable]
            bundle = verified[-1].service_bundle if verified else None  # the one the worker restores
            document = signer.document(
                StartDocument,
                release=request.release_id,
                application=application,
                service=service,
                version=version,
                bundle=bundle.digest if bundle else "",
                service_file=request.service_file,
                parameters=request.parameters,
                reason=reason,
            )
            request = request.model_copy(update={"signed": signer.sign(document)})
        return await self.start(request)

    async def unhold(self, application: str, service: str, environment: str, by: str, reason: str) -> str:
        """Lift the hold of a service's environment (after a manual or a failed rollback)."""
        from prodline.contracts import UNHOLD_UPDATE, Unhold, ledger_id

        handle = self.temporal.get_workflow_handle(ledger_id(application, service, environment))
        try:
            return await handle.execute_update(UNHOLD_UPDATE, Unhold(by=by, reason=reason), result_type=str)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            raise WrongState(cause.message if isinstance(cause, ApplicationError) else str(cause)) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"nothing was ever released of {service} in {environment} ({application})") from None
            raise

    # --- reading ------------------------------------------------------------------------

    async def outcome(self, release_id: str) -> Outcome:
        """The release's state and reason (and, for a failure that carries it, its final status)."""
        handle = self.handle(release_id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            # An unknown namespace is NOT_FOUND too: it goes on as it is, for the CLI to name.
            if exc.status == RPCStatusCode.NOT_FOUND and "namespace" not in exc.message.lower():
                raise NotFound(f"no release with ID {release_id!r}") from None
            raise
        if desc.status == WorkflowExecutionStatus.RUNNING:
            state = desc.typed_search_attributes.get(sa.STATE) or ReleaseState.running.value
            return Outcome(release_id, ReleaseState(state), "", desc)
        ended = _ENDED.get(desc.status) if desc.status is not None else None
        if ended is not None:
            state, reason = ended
            return Outcome(release_id, state, reason, desc)
        try:
            await handle.result(follow_runs=False)
        except WorkflowFailureError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                state = _STATE_BY_FAILURE_TYPE.get(cause.type or "", ReleaseState.failed)
                return Outcome(release_id, state, cause.message, desc)
            return Outcome(release_id, ReleaseState.failed, str(cause or exc), desc)
        return Outcome(release_id, ReleaseState.failed, "", desc)

    async def live_status(self, release_id: str) -> ReleaseStatus | None:
        """The status query's answer; None when no worker answers right now."""
        try:
            return await self.handle(release_id).query(
                STATUS_QUERY, result_type=ReleaseStatus, rpc_timeout=timedelta(seconds=2)
            )
        except Exception:  # no worker right now: progress shows up once one is back
            return None

    async def view(self, release_id: str) -> View:
        """What ``release status`` shows: a running release asks its worker, an ended one needs none."""
        outcome = await self.outcome(release_id)
        if outcome.running:
            current = await self.live_status(release_id)
            if current is not None and not outcome.state.final:
                # The query ran after describe, so it is the fresher view of a running release
                # (it may have started waiting, or just finished, between the two calls).
                return View(outcome, current.state, current.reason, current)
            return View(outcome, outcome.state, outcome.reason, current)
        from . import history  # an ended release only

        status = await history.closed_status(self.temporal, outcome.description)
        return View(outcome, outcome.state, outcome.reason or (status.reason if status else ""), status)

    async def watch(self, release_id: str, interval: float) -> AsyncIterator[Progress]:
        """The release every ``interval`` seconds until it ends; the last look carries its outcome."""
        from . import history

        handle = self.handle(release_id)
        status = None
        while True:
            desc = await handle.describe()
            if desc.status != WorkflowExecutionStatus.RUNNING:
                outcome = await self.outcome(release_id)
                final = await history.closed_status(self.temporal, outcome.description)
                yield Progress(outcome.description, final or status, outcome)
                return
            status = await self.live_status(release_id) or status
            yield Progress(desc, status)
            await asyncio.sleep(interval)

    async def list_releases(
        self,
        *,
        application: str | None = None,
        service: str | None = None,
        environment: str | None = None,
        state: str | None = None,
        limit: int = 50,
    ) -> list[ListedRelease]:
        """Releases matching the filters, newest start first (see :mod:`.listing`)."""
        from . import listing

        return await listing.newest(
            self.temporal, listing.visibility_query(application, service, environment, state), limit
        )

    async def ledger(self, application: str, service: str, environment: str) -> list[DeploymentRecord]:
        """What the service's ledger in ``environment`` recorded, oldest first."""
        from prodline.activities.ledger import read_ledger  # temporalio.activity: ledgers only

        return await read_ledger(self.temporal, application, service, environment)

    async def worker_problem(
        self,
        queue: str,
        description: WorkflowExecutionDescription | None = None,
        stall: timedelta | None = None,
        status: ReleaseStatus | None = None,
    ) -> str | None:
        """Why a release on ``queue`` does not move for want of a worker (see :mod:`.workers`), or None."""
        from . import workers

        return await workers.problem(self.temporal, queue, description, stall, status)

    async def unserved(self, queues: dict[str, str]) -> list[str]:
        """Warnings for the environments whose own task queue no worker polls (see :mod:`.workers`)."""
        from . import workers

        return await workers.unserved(self.temporal, queues)

    # --- steering -------------------------------------------------------------------------

    async def cancel(self, release_id: str) -> Outcome:
        """Ask the release to stop; raises :class:`WrongState` if it has ended already."""
        outcome = await self.outcome(release_id)
        if outcome.state.final:
            raise WrongState(f"release {release_id} already {outcome.state.value}; nothing to cancel")
        try:
            await self.handle(release_id).cancel()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            # It closed between the look and the cancel: say how it ended, not "no such release".
            ended = await self.outcome(release_id)
            raise WrongState(f"release {release_id} already {ended.state.value}; nothing to cancel") from None
        return outcome

    async def decision_target(self, release_id: str, environment: str | None = None) -> DecisionTarget:
        """The environment a decision on the release would be about (default: the one it waits in)."""
        outcome = await self.outcome(release_id)
        if outcome.state.final:
            raise WrongState(f"release {release_id} already {outcome.state.value}; there is nothing to decide")
        status = await self.live_status(release_id)
        if status is None:
            raise Unavailable(f"release {release_id} does not answer (is a worker running?)")
        environment = environment or next((e.name for e in status.environments if e.phase is Phase.waiting), None)
        if environment is None:
            raise WrongState(f"release {release_id} is not waiting for a decision; give --environment")
        if environment not in {e.name for e in status.environments}:
            raise InvalidInput(f"release {release_id} has no environment {environment!r}")
        # The status names its run; a release started before it did is named by describe.
        return DecisionTarget(release_id, environment, status, status.run_id or outcome.description.run_id)

    async def decide(
        self, target: DecisionTarget, verdict: Verdict, by: str, comment: str = "", signed: Signed | None = None
    ) -> DecisionRecord:
        """Send the decision as an Update and return the release's verdict on it (counted, or refused and why).

        Only the round trip: a signature (:meth:`DecisionTarget.document`, then
        :meth:`Signer.sign`) is made before, apart, so each can be timed alone. The Update
        goes to the run the approver was shown; the workflow records every attempt.
        """
        decision = Decision(
            request_id=uuid.uuid4().hex,
            environment=target.environment,
            by=by,
            verdict=verdict,
            comment=comment,
            signed=signed,
        )
        return await self._update(
            target.release_id,
            target.run_id,
            DECIDE_UPDATE,
            decision,
            decision.request_id,
            DecisionRecord,
            "the decision",
        )

    async def steer(self, release_id: str, command: RolloutCommand) -> str:
        """`release promote|abort`: the release acts on its canary and says what it did."""
        outcome = await self.outcome(release_id)
        if outcome.state.final:
            raise WrongState(f"release {release_id} already {outcome.state.value}; there is no canary to steer")
        what = "the " + command.action.replace("_", " ")
        return await self._update(
            release_id, outcome.description.run_id, ROLLOUT_UPDATE, command, uuid.uuid4().hex, str, what
        )

    async def _update(
        self, release_id: str, run_id: str, name: str, arg: Any, update_id: str, result_type: type[T], what: str
    ) -> T:
        """Send an Update to the run the user was shown; a refusal or an ended release is said as such."""
        handle = self.handle(release_id, run_id or None)
        try:
            async with asyncio.timeout(CONFIRM_SECONDS + 1):
                return await handle.execute_update(
                    name, arg, id=update_id, result_type=result_type, rpc_timeout=timedelta(seconds=CONFIRM_SECONDS)
                )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise Unavailable(
                f"no worker took {what} on {release_id} within {CONFIRM_SECONDS}s; it may still be "
                f"once one runs (check `prodline release status {release_id}`)"
            ) from None
        except WorkflowUpdateFailedError as exc:
            # The release did not take it: it ended meanwhile, or it refused the Update itself.
            await self._raise_if_ended(release_id, run_id)
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            raise WrongState(f"release {release_id} did not take {what}: {message}") from None
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise  # Temporal unreachable or refusing: reported as such
            await self._raise_if_ended(release_id, run_id)
            raise WrongState(f"release {release_id} is no longer running: {exc.message}") from None

    async def _raise_if_ended(self, release_id: str, run_id: str) -> None:
        """Say how the release ended (or that another run replaced the one shown), if it did."""
        outcome = await self.outcome(release_id)
        if outcome.state.final or not outcome.running:
            raise WrongState(
                f"release {release_id} already {outcome.state.value}; there is nothing to decide"
            ) from None
        if run_id and outcome.description.run_id != run_id:
            raise WrongState(
                f"release {release_id} was started again (run {outcome.description.run_id}) since you "
                "looked; look again and decide on the new run"
            ) from None

    async def register_search_attributes(self) -> Setup:
        """Register prodline's search attributes on this namespace (idempotent)."""
        from . import setup

        return await setup.register(self.temporal)


def _rollback_target(records: list[DeploymentRecord], service: str, environment: str, to: str | None) -> str:
    """``to`` if it was verified there, else the version verified there before the one live now.

    The workflow checks again (the ledger may change meanwhile); this says it at once, exit 2.
    """
    from prodline.contracts import live_deployment

    verified = [r.version for r in records if r.redeployable]
    if to is not None:
        if to in verified:
            return to
        known = ", ".join(dict.fromkeys(reversed(verified))) or "nothing yet"
        raise InvalidInput(
            f"{to} was never verified in {environment}: a rollback restores only what the ledger recorded there "
            f"(verified there, newest first: {known})"
        )
    live = live_deployment(records)
    if live is None:
        raise InvalidInput(f"nothing of {service} was ever verified in {environment}: there is nothing to roll back to")
    for record in reversed(records):
        if record.redeployable and record.version != live.version:
            return record.version
    raise InvalidInput(
        f"only {live.version} (live) was verified in {environment} (or earlier versions were recorded before "
        "rollbacks were possible): there is nothing before it to roll back to"
    )


async def _config_changed(desc: WorkflowExecutionDescription, request: ReleaseRequest) -> bool:
    memo = await desc.memo()
    return memo.get("digest") not in (None, request.digest)
