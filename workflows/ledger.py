"""The deployment ledger: one long-lived workflow per service and environment.

It keeps the recent deployments (version, release, times, outcome, and what
was deployed) and owns the environment's *lane*: releases of the service
there take turns, one at a time.

* A release asks for its turn (``lane`` signal, ``enter``) before it plans
  anything in the environment, and waits for the ledger's ``turn`` signal.
  While it waits it is told who is right ahead of it (the holder, or the
  release queued before it: either leaves the environment first), again only
  when that changes: a grant tells no one but the release granted, so a
  hand-over costs one signal however long the queue. Turns are numbered, so
  a release keeps the latest when signals arrive out of order. The turn goes
  to the first release waiting; a rollback goes first, and the release
  holding the lane is cancelled for it (a health wait, an approval or a soak
  must not stand in the way of recovery).
* The holder leaves when its deployment is recorded (the ``record`` signal),
  or with ``leave`` if it stops before deploying. A release that vanished
  (terminated) is dropped when the turn cannot be signalled to it.
* With ``supersede``, a newer version entering the queue ends the older
  versions still waiting there (they never deployed, so none skips an
  environment it was verified in: each is told and ends ``superseded``).
* A *hold* (after a manual rollback, or a failed rollback) keeps every release
  waiting until someone lifts it (``unhold``); rollbacks still pass.

Everything here is deterministic: the lane changes only on signals and
updates, in the order history records them. It continues-as-new before its
history grows large, carrying the lane and the most recent records forward.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from prodline.config.versions import is_older
    from prodline.contracts import (
        DRIFT_SIGNAL,
        LANE_QUERY,
        LANE_SIGNAL,
        LEDGER_WORKFLOW,
        RECORD_SIGNAL,
        RECORDS_QUERY,
        TURN_SIGNAL,
        UNHOLD_UPDATE,
        DeploymentRecord,
        DeploymentState,
        DriftReport,
        Hold,
        LaneEntry,
        LaneRequest,
        LaneTurn,
        LaneView,
        LedgerState,
        Unhold,
        live_deployment,
    )

KEEP_RECORDS = 100
SIGNALS_PER_RUN = 500

# Releases waiting in the lane are told who is right ahead of them (the holder, or the release
# queued before them), and told again only when that changes: telling all n waiting who holds
# the lane at every grant cost n(n-1)/2 signals, and their workflow tasks delayed the release
# granted (bench/lanes.py). Older runs did that.
WAITING_BEHIND = "waiting-behind"


@workflow.defn(name=LEDGER_WORKFLOW)
class DeploymentLedgerWorkflow:
    @workflow.init
    def __init__(self, state: LedgerState) -> None:
        self._state = state
        self._signals = 0
        self._sending: set[asyncio.Task[None]] = set()
        self._behind: bool | None = None  # whether waiting releases are told who is right ahead (a patch)
        # What each waiting release was last told (who is ahead, the hold): it is told again when that changes.
        self._told: dict[str, tuple[str, Hold | None]] = {}

    @workflow.run
    async def run(self, state: LedgerState) -> None:
        self._advance()  # a continued run may find the lane free with releases waiting
        await workflow.wait_condition(
            lambda: self._signals >= SIGNALS_PER_RUN or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and not self._sending)
        self._state.records = self._state.records[-KEEP_RECORDS:]
        workflow.continue_as_new(self._state)

    # --- deployments ---------------------------------------------------------------

    @workflow.signal(name=RECORD_SIGNAL)
    def record(self, record: DeploymentRecord) -> None:
        """Add a deployment, or update it when the same release reports again; its end frees the lane."""
        self._signals += 1
        records = self._state.records
        for i, existing in enumerate(records):
            if (existing.release_id, existing.version, existing.started_at) == (
                record.release_id,
                record.version,
                record.started_at,
            ):
                if existing.state is not DeploymentState.succeeded:  # a verified deployment stays verified
                    records[i] = record
                break
        else:
            records.append(record)
        if record.state is DeploymentState.rollback_failed:
            self._state.hold = Hold(
                version=record.restored or record.version,
                by=record.by,
                reason=f"the rollback failed: {record.reason}",
                at=record.finished_at,
                kind="attention",
            )
        elif record.kind == "rollback" and record.state is DeploymentState.succeeded and record.leaves_lane:
            # A manual rollback holds the environment at the version it restored.
            why = f" ({record.reason})" if record.reason else ""
            self._state.hold = Hold(
                version=record.version, by=record.by, reason=f"rolled back{why}", at=record.finished_at, kind="rollback"
            )
        if record.leaves_lane:
            self._leave(record.release_id)

    @workflow.query(name=RECORDS_QUERY)
    def records(self) -> list[DeploymentRecord]:
        return self._state.records

    # --- the lane ------------------------------------------------------------------

    @workflow.signal(name=LANE_SIGNAL)
    def lane(self, request: LaneRequest) -> None:
        self._signals += 1
        entry = request.entry
        if request.action == "leave":
            self._leave(entry.release_id)
            return
        state = self._state
        if state.holder is not None and state.holder.release_id == entry.release_id:
            self._grant(state.holder)  # asked again (a retried activity): the answer again
            return
        if state.holder is not None:
            # Is the holder still there? A terminated release never records its end; a turn it
            # cannot be told makes it leave (``_send``), so the lane never stays stuck behind it.
            self._grant(state.holder)
        if any(e.release_id == entry.release_id for e in state.queue):
            if self._telling_behind():  # asked again (a reset run): it waits for an answer
                self._told.pop(entry.release_id, None)
                self._tell_waiting()
            return
        if entry.kind == "release":
            if entry.supersede:
                self._supersede_older(entry)
            state.queue.append(entry)
        else:
            # A rollback or a heal goes first; a rollback also stops the release holding the lane.
            state.queue.insert(0, entry)
            holder = state.holder
            if entry.kind == "rollback" and holder is not None and holder.kind != "rollback":
                self._later(self._cancel(holder, entry))
        self._advance()
        if not self._telling_behind() and (state.holder is None or state.holder.release_id != entry.release_id):
            self._tell(entry, self._waiting_turn())  # (told by _advance otherwise)

    @workflow.update(name=UNHOLD_UPDATE)
    def unhold(self, request: Unhold) -> str:
        hold = self._state.hold
        assert hold is not None  # the validator refused otherwise
        self._state.hold = None
        self._advance()
        why = f": {request.reason}" if request.reason else ""
        return f"hold at {hold.version} ({hold.reason}) lifted by {request.by}{why}"

    @unhold.validator
    def _held(self, request: Unhold) -> None:
        if self._state.hold is None:
            raise ApplicationError(f"{self._state.service} in {self._state.environment} is not held")

    @workflow.signal(name=DRIFT_SIGNAL)
    def drift(self, report: DriftReport) -> None:
        self._signals += 1
        self._state.drift = report

    @workflow.query(name=LANE_QUERY)
    def view(self) -> LaneView:
        state = self._state
        return LaneView(
            holder=state.holder,
            queue=state.queue,
            hold=state.hold,
            live=live_deployment(state.records),
            drift=state.drift,
        )

    # --- turns -----------------------------------------------------------------------

    def _leave(self, release_id: str) -> None:
        state = self._state
        state.queue = [e for e in state.queue if e.release_id != release_id]
        self._told.pop(release_id, None)
        if state.holder is not None and state.holder.release_id == release_id:
            state.holder = None
            self._advance()
        elif self._telling_behind():
            self._tell_waiting()  # the one behind it waits for another now

    def _advance(self) -> None:
        """Give the lane to the first release that may have it, if it is free."""
        state = self._state
        if state.holder is None:
            for entry in state.queue:
                if state.hold is not None and entry.kind != "rollback":
                    continue  # held: only a rollback moves the environment (no release, no heal) until it is lifted
                state.queue.remove(entry)
                self._told.pop(entry.release_id, None)
                state.holder = entry
                self._grant(entry)
                break
            else:
                if not self._telling_behind():
                    for waiting in state.queue:  # the lane is free, and held: they wait for the hold to be lifted
                        self._tell(waiting, self._waiting_turn())
                    return
            if not self._telling_behind():
                for waiting in state.queue:  # who they wait for now
                    self._tell(waiting, self._waiting_turn())
                return
        if self._telling_behind():
            self._tell_waiting()

    def _telling_behind(self) -> bool:
        # Asked when first needed, which may be in a signal handler run before ``run``.
        if self._behind is None:
            self._behind = workflow.patched(WAITING_BEHIND)
        return self._behind

    def _tell_waiting(self) -> None:
        """Tell each waiting release who is right ahead of it, where that changed since it was told."""
        state = self._state
        # A grant changes nobody's: the first waiting release waited for the one granted, which
        # now holds the lane and has yet to leave it.
        ahead = state.holder.release_id if state.holder else ""
        for waiting in state.queue:
            now = (ahead, state.hold)
            if self._told.get(waiting.release_id) != now:
                self._told[waiting.release_id] = now
                self._tell(waiting, LaneTurn(environment=state.environment, ahead=ahead, held=state.hold))
            ahead = waiting.release_id

    def _grant(self, entry: LaneEntry) -> None:
        state = self._state
        turn = LaneTurn(
            environment=state.environment, granted=True, held=state.hold, live=live_deployment(state.records)
        )
        self._tell(entry, turn)

    def _waiting_turn(self) -> LaneTurn:
        holder = self._state.holder
        return LaneTurn(
            environment=self._state.environment, ahead=holder.release_id if holder else "", held=self._state.hold
        )

    def _supersede_older(self, newer: LaneEntry) -> None:
        state = self._state
        older = [e for e in state.queue if e.kind == "release" and is_older(e.version, newer.version)]
        for entry in older:
            state.queue.remove(entry)
            self._told.pop(entry.release_id, None)
            self._tell(entry, LaneTurn(environment=state.environment, superseded_by=newer.release_id))

    def _tell(self, entry: LaneEntry, turn: LaneTurn) -> None:
        if self._telling_behind():
            self._state.turns += 1
            turn.number = self._state.turns
        self._later(self._send(entry, turn))

    def _later(self, coroutine: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)  # type: ignore[arg-type]
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, entry: LaneEntry, turn: LaneTurn) -> None:
        # The release's latest run: a reset run is the same release.
        handle = workflow.get_external_workflow_handle(entry.release_id)
        try:
            await handle.signal(TURN_SIGNAL, turn)
        except Exception:
            workflow.logger.warning("release %s is gone; it leaves the lane", entry.release_id)
            self._leave(entry.release_id)

    async def _cancel(self, holder: LaneEntry, by: LaneEntry) -> None:
        handle = workflow.get_external_workflow_handle(holder.release_id)
        workflow.logger.info("cancelling %s for rollback %s", holder.release_id, by.release_id)
        try:
            await handle.cancel()
        except Exception:
            self._leave(holder.release_id)
