"""Drift checks: the Temporal Schedule behind them, and the ledger read they start with.

After a verified deployment in an environment that asks for it (``drift:
{every: 10m}``), the release makes sure a Schedule exists for that service
there (``drift:APP.SERVICE:ENV``); each time it fires it starts the drift check
workflow (``workflows/drift.py``), which runs every recorded step's ``fetch``
against what the ledger says was verified. Creating the schedule again only
updates its interval and settings, so every deployment may call it.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from prodline.contracts import (
    DRIFT_WORKFLOW,
    ENSURE_DRIFT_CHECKS,
    READ_LANE,
    DriftCheck,
    LaneView,
    drift_check_id,
    drift_schedule_id,
)

from .ledger import UnprovenRecord, prove_record, read_lane


class DriftActivities:
    def __init__(self, client: Client):
        self._client = client

    @activity.defn(name=ENSURE_DRIFT_CHECKS)
    async def ensure_drift_checks(self, check: DriftCheck) -> None:
        schedule_id = drift_schedule_id(check.application, check.service, check.environment)
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                DRIFT_WORKFLOW,
                check,
                id=drift_check_id(check.application, check.service, check.environment),
                task_queue=activity.info().task_queue,
                static_summary=f"drift check of {check.service} in {check.environment}",
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=check.every)]),
            # One check at a time: a slow one is not piled up behind.
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        )
        try:
            await self._client.create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:

            def replaced(_: ScheduleUpdateInput) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await self._client.get_schedule_handle(schedule_id).update(replaced)

    @activity.defn(name=READ_LANE)
    async def read_lane(self, check: DriftCheck) -> LaneView:
        """The lane, with its live record only if its release recorded it (the check runs its steps)."""
        view = await read_lane(self._client, check.application, check.service, check.environment)
        if view.live is not None:
            try:
                await prove_record(self._client, view.live)
            except UnprovenRecord as exc:
                activity.logger.warning("drift check of %s skipped: %s", check.environment, exc)
                return view.model_copy(update={"live": None, "unproven": str(exc)})
        return view
