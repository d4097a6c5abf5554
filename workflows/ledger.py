"""The deployment ledger: one long-lived workflow per service and environment.

It keeps the recent deployments (version, release, times, outcome) in its
state, answers queries about them, and continues-as-new before its history
grows large, carrying the most recent records forward.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from prodline.contracts import (
        LEDGER_WORKFLOW,
        RECORD_SIGNAL,
        RECORDS_QUERY,
        DeploymentRecord,
        LedgerState,
    )

KEEP_RECORDS = 100
SIGNALS_PER_RUN = 500


@workflow.defn(name=LEDGER_WORKFLOW)
class DeploymentLedgerWorkflow:
    @workflow.init
    def __init__(self, state: LedgerState) -> None:
        self._state = state
        self._signals = 0

    @workflow.run
    async def run(self, state: LedgerState) -> None:
        await workflow.wait_condition(
            lambda: self._signals >= SIGNALS_PER_RUN or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._state.records = self._state.records[-KEEP_RECORDS:]
        workflow.continue_as_new(self._state)

    @workflow.signal(name=RECORD_SIGNAL)
    def record(self, record: DeploymentRecord) -> None:
        """Add a deployment, or update it when the same release reports again."""
        self._signals += 1
        records = self._state.records
        for i, existing in enumerate(records):
            if existing.release_id == record.release_id and existing.started_at == record.started_at:
                records[i] = record
                return
        records.append(record)

    @workflow.query(name=RECORDS_QUERY)
    def records(self) -> list[DeploymentRecord]:
        return self._state.records
