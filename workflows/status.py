"""The live state of a release, as the ``status`` query and the CLI show it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from .approvals import DecisionRecord

# Names clients use to reach a release without importing the workflow (and its activities).
RELEASE_WORKFLOW = "Release"
STATUS_QUERY = "status"
DECIDE_SIGNAL = "decide"


class ReleaseState(StrEnum):
    running = "running"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    rejected = "rejected"
    cancelled = "cancelled"
    timed_out = "timed_out"

    @property
    def final(self) -> bool:
        return self not in (ReleaseState.running, ReleaseState.waiting)


# Failure types a release ends with; the CLI maps them to exit codes.
FAILURE_TYPES = {
    ReleaseState.failed: "ReleaseFailed",
    ReleaseState.rejected: "ReleaseRejected",
    ReleaseState.timed_out: "ReleaseTimedOut",
}


class Phase(StrEnum):
    pending = "pending"
    running = "running"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    skipped = "skipped"


class StepStatus(BaseModel):
    name: str
    kind: str
    phase: Phase = Phase.pending
    summary: str = ""
    plan: str = ""


class EnvironmentStatus(BaseModel):
    name: str
    phase: Phase = Phase.pending
    waiting_on: str = ""
    steps: list[StepStatus] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Event(BaseModel):
    at: datetime
    environment: str = ""
    message: str


class ReleaseStatus(BaseModel):
    release_id: str
    application: str
    service: str
    version: str
    initiator: str
    state: ReleaseState = ReleaseState.running
    reason: str = ""
    environments: list[EnvironmentStatus] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    decisions: list[DecisionRecord] = Field(default_factory=list, description="Every approval, rejection and refusal.")

    def environment(self, name: str) -> EnvironmentStatus:
        return next(e for e in self.environments if e.name == name)

    def markdown(self) -> str:
        """Live details for the Temporal UI."""
        icon = {
            "pending": "⏳",
            "running": "🔄",
            "waiting": "⏸",
            "succeeded": "✅",
            "failed": "❌",
            "cancelled": "🚫",
            "skipped": "➖",
        }
        lines = [f"**{self.service} {self.version}**: {self.state.value}"]
        if self.reason:
            lines.append(f"\n> {self.reason}")
        for env in self.environments:
            waiting = f" (waiting on {env.waiting_on})" if env.waiting_on else ""
            lines.append(f"\n{icon[env.phase.value]} **{env.name}**: {env.phase.value}{waiting}")
            lines += [f"- {icon[s.phase.value]} {s.name} ({s.kind}) {s.summary}".rstrip() for s in env.steps]
        return "\n".join(lines)
