"""The interface every step kind implements, and the values that cross it.

A runner is a small object with ``plan``, ``apply`` and ``fetch`` (rollback
joins them with the release-safety work). Runners are thin adapters: they
translate a step's config into calls to a real tool and its results back
into :class:`StepResult`; retries, timeouts and ordering belong to Temporal
and the workflow.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field

from prodline.config.steps import Step

from ..context import RunContext


class StepResult(BaseModel):
    """What a step reports back into history (so: nothing secret)."""

    summary: str = ""
    output: str = Field("", description="Tail of the tool's output, secrets masked.")
    changed: bool | None = Field(None, description="For plan and fetch: whether anything differs.")
    artifact: str | None = Field(None, description="Artifact-store key of the saved plan.")
    digest: str | None = Field(None, description="SHA-256 of the saved plan: apply refuses any other.")
    outputs: dict[str, str] = Field(default_factory=dict, description="Non-sensitive outputs.")
    sensitive_outputs: list[str] = Field(default_factory=list, description="Names of sensitive outputs.")
    outputs_key: str | None = Field(None, description="Artifact-store key of all outputs, sensitive included.")


class StepRun(BaseModel):
    """Input of every step activity."""

    context: RunContext
    step: Step
    plan: StepResult | None = Field(None, description="For apply: the plan shown (and approved) before.")

    def artifact_key(self, what: str) -> str:
        """Where this step's artifacts live: per release run, environment and step."""
        c = self.context
        return f"{c.release_id}/{c.run_id}/{c.environment}/{self.step.name}/{what}"


class StepRunner(Protocol):
    async def plan(self, run: StepRun) -> StepResult: ...

    async def apply(self, run: StepRun) -> StepResult: ...

    async def fetch(self, run: StepRun) -> StepResult: ...
