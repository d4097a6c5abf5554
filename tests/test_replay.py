"""Recorded release histories still replay: a change that would break releases in flight fails here.

Fixtures come from `tests/replay/record.py`; see its docstring for when to
re-record and when a change needs `workflow.patched`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from prodline.workers.worker import WORKFLOWS

FIXTURES = sorted((Path(__file__).parent / "replay").glob("*.json"))


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_recorded_history_replays(fixture):
    events = json.loads(fixture.read_text())["events"]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    history = WorkflowHistory.from_json(f"replay-{fixture.stem}", fixture.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = asyncio.run(replayer.replay_workflow(history, raise_on_replay_failure=True))
    assert result.replay_failure is None
    assert started["workflowType"]["name"] in {"Release", "DeploymentLedger"}


def test_every_kind_of_outcome_is_covered():
    assert {f.stem for f in FIXTURES} >= {"succeeded", "failed", "rejected", "cancelled", "ledger"}


def test_a_nondeterministic_change_is_caught(monkeypatch):
    """The replay test can fail: reorder what the workflow does and it must."""
    from prodline.workflows import release

    original = release.ReleaseWorkflow._promote

    async def skip_plans(self, plan):
        plan = plan.model_copy(
            update={
                "steps": [
                    s.model_copy(update={"command": s.command.model_copy(update={"plan": None})}) for s in plan.steps
                ]
            }
        )
        return await original(self, plan)

    monkeypatch.setattr(release.ReleaseWorkflow, "_promote", skip_plans)
    history = WorkflowHistory.from_json(
        "replay-succeeded", (Path(__file__).parent / "replay" / "succeeded.json").read_text()
    )
    # Unsandboxed, so the monkeypatched class is the one that runs.
    replayer = Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=UnsandboxedWorkflowRunner()
    )
    result = asyncio.run(replayer.replay_workflow(history, raise_on_replay_failure=False))
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
