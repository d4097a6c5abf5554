"""A drift check: does what runs in an environment still match what was verified there?

Started by the environment's drift Schedule (``activities/drift.py``). It reads
the ledger's live deployment, runs each of its recorded steps' ``fetch`` with
the recorded bundle, parameters and applied objects (Terraform ``plan
-detailed-exitcode``, a Kubernetes dry-run diff against the objects applied, a
command step's ``fetch`` exiting 2), on the environment's own task queue, and
reports what differs to the ledger (``env status``, logs, the UI).

With ``self_heal`` it corrects drift through a normal release of the verified
version (kind ``heal``: the same lane and the same rules as any release), unless
the environment is held, or a release already holds its lane (it deploys anyway).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from prodline.config.release import ReleaseRequest, RestoreOrder
    from prodline.contracts import (
        DRIFT_SIGNAL,
        DRIFT_WORKFLOW,
        FETCH_STEP,
        READ_LANE,
        RELEASE_WORKFLOW,
        DeploymentRecord,
        DriftCheck,
        DriftReport,
        LaneView,
        RunContext,
        StepResult,
        StepRun,
        ledger_id,
    )

    from .outcomes import activity_failure

# What a drifted step's report keeps of the fetch's output.
_REPORT_CHARS = 2000
# A step whose fetch fails (it needs an earlier step's outputs, its tool is down) is reported as
# not checked, never as drift: healing it would re-deploy for nothing found.
UNCHECKED_IS_NOT_DRIFT = "unchecked-is-not-drift"


@workflow.defn(name=DRIFT_WORKFLOW)
class DriftCheckWorkflow:
    @workflow.run
    async def run(self, check: DriftCheck) -> DriftReport | None:
        # Asked first: older checks counted a fetch that failed as drift (and healed it).
        unchecked_is_not_drift = workflow.patched(UNCHECKED_IS_NOT_DRIFT)
        view = await workflow.execute_activity(
            READ_LANE, check, result_type=LaneView, start_to_close_timeout=timedelta(seconds=30)
        )
        live = view.live
        if live is None and view.unproven and unchecked_is_not_drift:
            # A record its release did not record: nothing of it is run; said where people look.
            report = DriftReport(
                checked_at=workflow.now(), version="", drifted=False, unchecked={"record": view.unproven}
            )
            await self._report(check, report)
            return report
        if live is None or not live.redeployable:
            return None  # nothing verified (with what a check needs) to compare with
        drifted: dict[str, str] = {}
        unchecked: dict[str, str] = {}
        for step in live.steps:
            try:
                result = await workflow.execute_activity(
                    FETCH_STEP,
                    self._fetch_run(live, step.name),
                    result_type=StepResult,
                    start_to_close_timeout=step.timeout,
                    heartbeat_timeout=step.heartbeat_timeout,
                    retry_policy=RetryPolicy(maximum_attempts=3),
                    task_queue=live.task_queue or None,
                    summary=f"{check.environment}: is {step.name} as verified?",
                )
            except ActivityError as exc:
                (unchecked if unchecked_is_not_drift else drifted)[step.name] = (
                    f"could not be checked: {activity_failure(exc)}"
                )
                continue
            if result.changed:
                drifted[step.name] = "\n".join(filter(None, [result.summary, result.output]))[:_REPORT_CHARS]
        report = DriftReport(
            checked_at=workflow.now(), version=live.version, drifted=bool(drifted), steps=drifted, unchecked=unchecked
        )
        if unchecked:
            workflow.logger.warning(
                "drift check of %s incomplete: %s",
                check.environment,
                ", ".join(unchecked),
                extra={"service": check.service},
            )
        if drifted:
            workflow.logger.warning(
                "drift in %s: %s", check.environment, ", ".join(drifted), extra={"service": check.service}
            )
            if check.self_heal:
                report.healing = await self._heal(check, live, view)
        await self._report(check, report)
        return report

    async def _report(self, check: DriftCheck, report: DriftReport) -> None:
        ledger = workflow.get_external_workflow_handle(ledger_id(check.application, check.service, check.environment))
        await ledger.signal(DRIFT_SIGNAL, report)

    def _fetch_run(self, live: DeploymentRecord, step_name: str) -> StepRun:
        step = next(s for s in live.steps if s.name == step_name)
        context = RunContext(
            release_id=live.release_id,
            application=live.application,
            service=live.service,
            version=live.version,
            environment=live.environment,
            initiator="prodline drift check",
            bundle=live.service_bundle,
            base_dir=live.service_dir,
            parameters=live.parameters,
            secrets=live.secrets,
            env=live.env,
            run_id=workflow.info().run_id,
        )
        key = live.applied_keys.get(step_name)
        applied = StepResult(applied_key=key, applied_digest=live.applied.get(step_name, "")) if key else None
        return StepRun(context=context, step=step, applied=applied)

    async def _heal(self, check: DriftCheck, live: DeploymentRecord, view: LaneView) -> str:
        """Start a release of the verified version; say why not when it is not healed."""
        if view.hold is not None:
            return f"not healed: {check.environment} is held at {view.hold.version} ({view.hold.reason})"
        if view.holder is not None:
            return f"not healed: {view.holder.release_id} is deploying there"
        order = RestoreOrder(
            environment=check.environment,
            kind="heal",
            reason=f"drift in {check.environment}",
            nonce=str(workflow.uuid4())[:12],
        )
        request = ReleaseRequest(
            application=check.application,
            service=check.service,
            version=live.version,
            initiator="prodline drift check",
            restore=order,
        )
        await workflow.start_child_workflow(
            RELEASE_WORKFLOW,
            request,
            id=request.release_id,
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=f"heal {check.service} {live.version} in {check.environment}",
        )
        return request.release_id
