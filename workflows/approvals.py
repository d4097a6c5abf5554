"""Decisions by people: approvals, rejections, and resuming a paused release.

People send a decision (a Temporal signal, so every attempt is in the
workflow's history with who, when and the comment); the open gate judges it
deterministically and the verdict is kept in the release status, where the
CLI reads it back to tell the person whether it counted.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from prodline.config.rules import ApprovalRule


class Verdict(StrEnum):
    approve = "approve"
    reject = "reject"


class Decision(BaseModel):
    """Signal payload of `prodline approve|reject`."""

    request_id: str
    environment: str
    by: str
    verdict: Verdict
    comment: str = ""


class DecisionRecord(Decision):
    at: datetime
    accepted: bool
    reason: str = ""


class Gate(BaseModel):
    """A point where the release waits for people: an approval or a pause."""

    environment: str
    what: str
    rule: ApprovalRule
    initiator: str
    approvals: list[str] = Field(default_factory=list)
    rejected_by: str = ""
    rejection_comment: str = ""

    @property
    def settled(self) -> bool:
        return bool(self.rejected_by) or len(self.approvals) >= self.rule.min_approvers

    def progress(self) -> str:
        have = f"{len(self.approvals)}/{self.rule.min_approvers} approvals"
        who = f" ({', '.join(self.approvals)})" if self.approvals else ""
        pool = f"; approvers: {', '.join(self.rule.approvers)}" if self.rule.approvers else ""
        return f"{self.what}: {have}{who}{pool}"

    def judge(self, decision: Decision) -> str:
        """Record the decision if it counts; return why not otherwise ("" if accepted)."""
        if decision.environment != self.environment:
            return f"the release is waiting in {self.environment}, not {decision.environment}"
        if self.settled:
            return "this decision has already been made"
        if self.rule.approvers and decision.by not in self.rule.approvers:
            return f"{decision.by} may not decide for {self.environment} (approvers: {', '.join(self.rule.approvers)})"
        if decision.verdict is Verdict.reject:
            self.rejected_by, self.rejection_comment = decision.by, decision.comment
            return ""
        if self.rule.forbid_initiator and decision.by == self.initiator:
            return f"{decision.by} started this release and may not approve it"
        if decision.by in self.approvals:
            return f"{decision.by} already approved; {self.rule.min_approvers} distinct approvers are needed"
        self.approvals.append(decision.by)
        return ""
