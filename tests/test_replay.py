"""Recorded release histories still replay: a change that would break releases in flight fails here.

Fixtures come from `tests/replay/record.py`; see its docstring for when to
re-record and when a change needs `workflow.patched`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from prodline.config.release import release_id
from prodline.contracts import (
    ADMIT_APPLY,
    APPLY_STEP,
    APPLY_UPDATE,
    DECIDE_SIGNAL,
    DECIDE_UPDATE,
    EVALUATE_RULE,
    FAILURE_TYPES,
    LANE_REQUEST,
    LANE_SIGNAL,
    PLAN_STEP,
    PROVE_RECORD,
    RECORD_DEPLOYMENT,
    RECORD_SIGNAL,
    RELEASE_WORKFLOW,
    RESOLVE_RELEASE,
    TURN_SIGNAL,
    ReleaseState,
)
from prodline.workers.sandbox import WORKFLOW_RUNNER
from prodline.workers.worker import WORKFLOWS

HERE = Path(__file__).parent / "replay"
FIXTURES = sorted(HERE.glob("*.json"))


def history(fixture: Path) -> WorkflowHistory:
    """The fixture's history under its workflow's real ID (a release checks its ID names it)."""
    text = fixture.read_text()
    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    workflow_id = f"replay-{fixture.stem}"
    if started["workflowType"]["name"] == RELEASE_WORKFLOW:
        request = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
        workflow_id = release_id(request["application"], request["service"], request["version"])
    return WorkflowHistory.from_json(workflow_id, text)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_recorded_history_replays(fixture):
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=WORKFLOW_RUNNER)
    result = asyncio.run(replayer.replay_workflow(history(fixture), raise_on_replay_failure=False))
    assert result.replay_failure is None, f"{fixture.name} no longer replays: {result.replay_failure}"


def what_happens_in(events: list[HistoryEvent]) -> Iterator[str]:
    """The things a history exercises, named as the workflow code names them."""
    workflow_type = events[0].workflow_execution_started_event_attributes.workflow_type.name
    for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            yield f"activity {event.activity_task_scheduled_event_attributes.activity_type.name}"
        elif event.HasField("marker_recorded_event_attributes"):
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_patch":  # workflow.patched(...)
                yield f"patch {json.loads(marker.details['patch-data'].payloads[0].data)['id']}"
            else:  # a local activity
                yield f"local activity {json.loads(marker.details['data'].payloads[0].data)['activity_type']}"
        elif event.HasField("workflow_execution_update_accepted_event_attributes"):
            yield f"update {event.workflow_execution_update_accepted_event_attributes.accepted_request.input.name}"
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            yield f"signal {event.workflow_execution_signaled_event_attributes.signal_name}"
        elif event.HasField("timer_fired_event_attributes"):
            yield "timer fired"
        elif event.HasField("workflow_execution_completed_event_attributes"):
            yield f"{workflow_type} completed"
        elif event.HasField("workflow_execution_failed_event_attributes"):
            failure = event.workflow_execution_failed_event_attributes.failure
            yield f"{workflow_type} failed: {failure.application_failure_info.type}"
        elif event.HasField("workflow_execution_canceled_event_attributes"):
            yield f"{workflow_type} cancelled"


def test_the_recorded_histories_exercise_everything_a_release_does():
    """A replay proves only what its histories contain. Together they must hold every
    activity the release calls, its local activities (resolving the plan, recording it) and the
    ledger's signal, an application's registered (and admitted) revision, decisions as Updates
    and as signals, a
    durable timer, and the ways a release ends, so a re-recording cannot quietly drop one."""
    seen = {thing for fixture in FIXTURES for thing in what_happens_in(list(history(fixture).events))}
    expected = {
        f"activity {PLAN_STEP}",
        f"activity {APPLY_STEP}",
        f"activity {EVALUATE_RULE}",
        f"local activity {RECORD_DEPLOYMENT}",
        f"local activity {RESOLVE_RELEASE}",
        f"local activity {ADMIT_APPLY}",
        f"update {APPLY_UPDATE}",
        f"update {DECIDE_UPDATE}",
        f"signal {DECIDE_SIGNAL}",
        f"signal {RECORD_SIGNAL}",
        "timer fired",
        f"{RELEASE_WORKFLOW} completed",
        f"{RELEASE_WORKFLOW} failed: {FAILURE_TYPES[ReleaseState.failed]}",
        f"{RELEASE_WORKFLOW} failed: {FAILURE_TYPES[ReleaseState.rejected]}",
        f"{RELEASE_WORKFLOW} cancelled",
        "patch final-status-memo",
        "patch registered-applications",
        "patch signed-applies-1",
        # Lanes and rollbacks (`record.py safety`): the turn asked for and given, a rollback, a supersede.
        f"local activity {LANE_REQUEST}",
        f"signal {LANE_SIGNAL}",
        f"signal {TURN_SIGNAL}",
        "patch lanes",
        # The hand-over made quick (bench/lanes.py): the freeze gate as a local activity, waiting turns.
        f"local activity {EVALUATE_RULE}",
        "patch quick-handover",
        "patch waiting-behind",
        "patch superseded-is-final",
        # An automatic rollback proves the record it restores (a local activity).
        "patch proven-rollbacks",
        f"local activity {PROVE_RECORD}",
        f"{RELEASE_WORKFLOW} failed: {FAILURE_TYPES[ReleaseState.rolled_back]}",
        f"{RELEASE_WORKFLOW} failed: {FAILURE_TYPES[ReleaseState.superseded]}",
    }
    assert expected - seen == set(), f"no recorded history has {sorted(expected - seen)}"


def test_a_nondeterministic_change_is_caught(monkeypatch):
    """The replay test can fail: reorder what the workflow does and it must."""
    from prodline.workflows import release

    original = release.ReleaseWorkflow._promote

    async def skip_plans(self, stage):
        steps = [s.model_copy(update={"command": s.command.model_copy(update={"plan": None})}) for s in stage.steps]
        return await original(self, stage.model_copy(update={"steps": steps}))

    monkeypatch.setattr(release.ReleaseWorkflow, "_promote", skip_plans)
    # Unsandboxed, so the monkeypatched class is the one that runs.
    replayer = Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=UnsandboxedWorkflowRunner()
    )
    result = asyncio.run(replayer.replay_workflow(history(HERE / "succeeded.json"), raise_on_replay_failure=False))
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
