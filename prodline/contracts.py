"""Everything that crosses Temporal history: names and payloads, in one place.

A release's history is read back long after it was written (replays, queries,
the CLI on another machine), so what goes into it is a contract: the names
workflows, queries, signals and activities are registered under, and the
pydantic models of their inputs and results. Nothing here does I/O or imports
tool code; the workflow, the activities, the worker and the client all import
it, which is what lets the workflow call activities by name and the CLI reach
a release without importing either.

Config models (steps, rules, the release request) are payloads too; they stay
the single source of truth in :mod:`prodline.config` and are used as they are.
Keep field names stable: a renamed field is a different payload for releases
already in flight.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from prodline.config.release import BundleRef, release_id
from prodline.config.rules import Check, Precondition
from prodline.config.steps import Step
from prodline.identity.documents import Signed

# --- names ------------------------------------------------------------------------------

RELEASE_WORKFLOW = "Release"
STATUS_QUERY = "status"
# Memo key of a closed release's final status: readable with `describe`, no worker needed.
FINAL_STATUS_MEMO = "prodline.status"
DECIDE_SIGNAL = "decide"  # before decisions were Updates; still judged the same way
DECIDE_UPDATE = "decision"  # Decision -> DecisionRecord: the verdict, counted or refused, and why

LEDGER_WORKFLOW = "DeploymentLedger"
RECORD_SIGNAL = "record"
RECORDS_QUERY = "records"
# The ledger also owns the environment's *lane*: one release of the service there at a time.
LANE_SIGNAL = "lane"  # LaneRequest: a release asks for its turn, or leaves the queue
TURN_SIGNAL = "turn"  # to a release: LaneTurn (its turn has come, it was superseded, or who is ahead)
LANE_QUERY = "lane"  # -> LaneView: who holds the lane, who waits, the hold, the live deployment
UNHOLD_UPDATE = "unhold"  # Unhold -> str: lift a hold (after a manual rollback, or a failed rollback)
LANE_REQUEST = "prodline.lane_request"  # LaneRequest -> None (signal-with-start of the ledger)
DRIFT_SIGNAL = "drift"  # DriftReport: what the last drift check of the live deployment found

# Drift: a Temporal Schedule per service and environment starts a drift check now and then.
DRIFT_WORKFLOW = "DriftCheck"  # DriftCheck -> DriftReport | None
READ_LANE = "prodline.read_lane"  # DriftCheck -> LaneView
ENSURE_DRIFT_CHECKS = "prodline.ensure_drift_checks"  # DriftCheck -> None (creates or updates the schedule)

# The registered application: one long-lived workflow per application holds its revisions.
APPLICATION_WORKFLOW = "Application"
APPLY_UPDATE = "apply"  # ApplicationChange -> Applied
REVISION_QUERY = "revision"  # revision number (0: the current one) -> Revision | None
REVISIONS_QUERY = "revisions"  # -> list[Revision], oldest first, without their sources
# Memo key of the application workflow: its current revision's {"number", "digest"}, readable
# with a describe (answered by the server) where a query would wait for a worker.
REVISION_MEMO = "prodline.revision"

RESOLVE_RELEASE = "prodline.resolve_release"  # ReleaseRequest -> ReleasePlan
PLAN_STEP = "prodline.plan_step"
APPLY_STEP = "prodline.apply_step"
FETCH_STEP = "prodline.fetch_step"
# Steps that wait for what they applied (``Step.spec.waits``), and canaries the workflow drives
# pause by pause (``drives_pauses``): StepRun -> StepProgress; StepAction -> StepProgress.
WAIT_STEP = "prodline.wait_step"
PROMOTE_STEP = "prodline.promote_step"
ABORT_STEP = "prodline.abort_step"
# An operator's `prodline release promote|abort`: RolloutCommand -> str (what was done).
ROLLOUT_UPDATE = "rollout"
EVALUATE_RULE = "prodline.evaluate_rule"
RECORD_DEPLOYMENT = "prodline.record_deployment"
# DeploymentRecord -> None: the record is one its release recorded (its history holds its digest).
PROVE_RECORD = "prodline.prove_record"
UNPROVEN_RECORD = "UnprovenRecord"  # the error type when it is not
ADMIT_APPLY = "prodline.admit_apply"  # ApplyAdmission -> signer ("" when the workers hold no admin keys)

# Error type of an apply the workers' admin keys refuse.
APPLY_REFUSED = "ApplyRefused"

# Application error types the workflow tells apart.
NON_RETRYABLE_CONFIG = "ConfigurationError"
# Raised by apply when the state changed since the plan; the workflow decides what next.
STALE_PLAN = "StalePlan"
# Raised by a wait when what was applied can never become healthy (a progress deadline, an abort).
UNHEALTHY = "Unhealthy"


def ledger_id(application: str, service: str, environment: str) -> str:
    """The ledger workflow of one service in one environment."""
    return f"deployments:{application}.{service}:{environment}"


def drift_schedule_id(application: str, service: str, environment: str) -> str:
    """The Temporal Schedule that checks a service's verified deployment in an environment for drift."""
    return f"drift:{application}.{service}:{environment}"


def drift_check_id(application: str, service: str, environment: str) -> str:
    """The drift check workflows that schedule starts: this ID, with "-" and the time appended."""
    return f"{drift_schedule_id(application, service, environment)}:check"


def application_id(application: str) -> str:
    """The workflow that holds an application's registered revisions."""
    return f"application:{application}"


# --- the release's identity, shared by the payloads that name it --------------------------


class ReleaseRef(BaseModel):
    """Which release a payload belongs to (flat fields: subclasses keep their JSON shape)."""

    release_id: str
    application: str
    service: str
    version: str

    @classmethod
    def of(cls, application: str, service: str, version: str) -> dict[str, Any]:
        """The identity fields, ready to pass to any subclass: ``RunContext(**ReleaseRef.of(...), ...)``."""
        return {
            "release_id": release_id(application, service, version),
            "application": application,
            "service": service,
            "version": version,
        }


# --- activities: steps and rules --------------------------------------------------------


class RunContext(ReleaseRef):
    """What an activity knows about the release it works for: data only.

    Holds names and non-secret values. Secret values are read from the worker's
    own environment at the last moment (``activities/context.py``) and go only
    into the child process's environment and the list of strings masked in its
    output.
    """

    environment: str
    initiator: str = "unknown"
    bundle: BundleRef | None = Field(
        default=None, description="The code this activity runs; each attempt works in its own copy of it."
    )
    base_dir: str = Field(
        description="Folder relative workdirs resolve from: inside the bundle, or absolute when there is none."
    )
    parameters: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict, description="Parameter -> worker environment variable.")
    env: dict[str, str] = Field(default_factory=dict, description="The environment's own variables.")
    args: dict[str, str] = Field(default_factory=dict, description="Arguments of a protection.")
    run_id: str = Field(default="", description="Workflow run: a re-run of a release never reuses a plan.")
    outputs: dict[str, str] = Field(default_factory=dict, description="steps.NAME.outputs.KEY -> value, earlier steps.")
    sensitive_outputs: dict[str, str] = Field(
        default_factory=dict, description="steps.NAME.outputs.KEY -> artifact key holding the (secret) value."
    )
    output_digests: dict[str, str] = Field(
        default_factory=dict, description="Artifact key of outputs -> its SHA-256, as the step that stored it said."
    )


class StepResult(BaseModel):
    """What a step reports back into history (so: nothing secret)."""

    summary: str = ""
    output: str = Field(default="", description="Tail of the tool's output, secrets masked.")
    changed: bool | None = Field(default=None, description="For plan and fetch: whether anything differs.")
    artifact: str | None = Field(default=None, description="Artifact-store key of the saved plan.")
    digest: str | None = Field(default=None, description="SHA-256 of the saved plan: apply refuses any other.")
    outputs: dict[str, str] = Field(default_factory=dict, description="Non-sensitive outputs.")
    sensitive_outputs: list[str] = Field(default_factory=list, description="Names of sensitive outputs.")
    outputs_key: str | None = Field(default=None, description="Artifact-store key of all outputs, sensitive included.")
    outputs_digest: str = Field(default="", description="SHA-256 of what is stored under outputs_key.")
    applied_key: str | None = Field(
        default=None, description="Artifact-store key of exactly what apply deployed (a Kubernetes step's objects)."
    )
    applied_digest: str = Field(default="", description="SHA-256 of what is stored under applied_key.")


class StepRun(BaseModel):
    """Input of every step activity."""

    context: RunContext
    step: Step
    plan: StepResult | None = Field(default=None, description="For apply: the plan shown (and approved) before.")
    applied: StepResult | None = Field(
        default=None, description="For wait, promote and abort: what apply reported (applied_key names the objects)."
    )
    restoring: bool = Field(
        default=False,
        description="A rollback: re-deploying a verified version as recorded (a command step runs its `rollback`).",
    )

    def artifact_key(self, what: str) -> str:
        """Where this step's artifacts live: per release run, environment and step."""
        c = self.context
        return f"{c.release_id}/{c.run_id}/{c.environment}/{self.step.name}/{what}"


class StepProgress(BaseModel):
    """Where a waiting step stands: healthy, stopped at a canary pause, or (in heartbeats) on its way."""

    done: bool = Field(default=False, description="Rolled out, available and (a canary) fully promoted.")
    paused: bool = Field(default=False, description="Stopped at a `pause: {}` step, waiting to be promoted.")
    pause: int = Field(default=0, description="Which pause step it stopped at (1-based), when paused.")
    step_index: int = Field(default=0, description="The canary step index it stopped at (Argo's currentStepIndex).")
    steps: int = Field(default=0, description="How many canary steps the Rollout has.")
    pod_hash: str = Field(default="", description="The pod template hash the pause is for (currentPodHash).")
    message: str = ""


class StepAction(BaseModel):
    """Input of promote and abort: the step, and the pause it must still be at."""

    run: StepRun
    at: StepProgress | None = Field(default=None, description="Promote only when still paused here.")
    full: bool = Field(default=False, description="Promote to the end, skipping the remaining steps.")
    reason: str = ""


class RolloutCommand(BaseModel):
    """`prodline release promote|abort`: an operator acting on a release's canary."""

    action: Literal["promote", "promote_full", "abort"]
    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)


class Outcome(StrEnum):
    passed = "passed"
    failed = "failed"
    inconclusive = "inconclusive"
    pending = "pending"


class RuleRun(BaseModel):
    """Input of the rule activity: one evaluation of one rule."""

    context: RunContext
    rule: Check | Precondition


class RuleResult(BaseModel):
    outcome: Outcome
    reason: str = ""
    wait_until: datetime | None = None

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.passed


# --- the ledger: what is deployed where ---------------------------------------------------


class DeploymentState(StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    rejected = "rejected"
    timed_out = "timed_out"
    rolled_back = "rolled_back"  # failed, and the version verified before was restored
    rollback_failed = "rollback_failed"  # failed, and restoring the version before failed too


# How a deployment came about: a release of a new version, or a restore of a verified one.
DeploymentKind = Literal["release", "rollback", "heal"]


class DeploymentRecord(ReleaseRef):
    environment: str
    state: DeploymentState
    started_at: datetime
    finished_at: datetime
    reason: str = ""
    # What was deployed, so that it can be deployed again exactly (empty on older records).
    bundle: str = Field(default="", description="Digest of the service bundle.")
    revision: int = Field(default=0, description="Application revision the release obeyed.")
    parameters: dict[str, str] = Field(default_factory=dict, description="Resolved non-secret parameters.")
    applied: dict[str, str] = Field(
        default_factory=dict,
        description="Step -> digest of what it applied (a Kubernetes step: its objects and prune list).",
    )
    # Enough to deploy this exactly again (a rollback): the bundle and the resolved steps.
    service_bundle: BundleRef | None = None
    service_dir: str = ""
    secrets: dict[str, str] = Field(default_factory=dict, description="Secret parameter -> worker variable.")
    steps: list[Step] = Field(default_factory=list, description="The steps as resolved for this environment.")
    env: dict[str, str] = Field(default_factory=dict, description="The environment's own variables then.")
    task_queue: str = Field(default="", description="Where its steps ran (empty: the control queue).")
    applied_keys: dict[str, str] = Field(
        default_factory=dict, description="Step -> artifact key of exactly what it applied (a Kubernetes step)."
    )
    kind: DeploymentKind = "release"
    by: str = Field(default="", description="Who started it (a rollback: who asked for it).")
    approved_by: list[str] = Field(default_factory=list, description="Who approved it here.")
    bypassed: list[str] = Field(
        default_factory=list, description="Rules a rollback skipped, as the application allows."
    )
    restored: str = Field(default="", description="rolled_back: the version that was restored.")
    leaves_lane: bool = Field(
        default=True, description="False for a restore recorded by a release that still holds the lane."
    )

    @property
    def redeployable(self) -> bool:
        """Recorded with everything a rollback needs (records before rollbacks existed are not)."""
        return self.state is DeploymentState.succeeded and bool(self.steps)


def record_digest(record: DeploymentRecord) -> str:
    """What the release's history keeps of a record it sent: the ledger's copy must match it."""
    # Defaults left out: a field added to these models later leaves the digest of earlier records as it was.
    return "sha256:" + hashlib.sha256(record.model_dump_json(exclude_defaults=True).encode()).hexdigest()


def live_deployment(records: list[DeploymentRecord]) -> DeploymentRecord | None:
    """What runs in the environment: the latest verified (succeeded) deployment."""
    return next((r for r in reversed(records) if r.state is DeploymentState.succeeded), None)


class LaneEntry(BaseModel):
    """A release asking for (or holding) its turn in an environment."""

    release_id: str
    run_id: str
    version: str
    requested_at: datetime
    kind: DeploymentKind = "release"
    by: str = ""
    supersede: bool = Field(default=False, description="Older releases waiting here end as superseded.")


class LaneRequest(BaseModel):
    """Signal to a ledger: enter the lane (queue for a turn) or leave it."""

    application: str
    service: str
    environment: str
    action: Literal["enter", "leave"]
    entry: LaneEntry


class Hold(BaseModel):
    """Nothing but a rollback or an `unhold` moves the environment on."""

    version: str = Field(description="The version the environment is held at.")
    by: str
    reason: str
    at: datetime
    kind: Literal["rollback", "attention"] = Field(
        description="rollback: held after a manual rollback; attention: a rollback failed there."
    )


class LaneTurn(BaseModel):
    """Signal from a ledger to a release: how its request for the lane stands."""

    environment: str
    granted: bool = False
    superseded_by: str = Field(default="", description="The newer release that superseded this one.")
    ahead: str = Field(
        default="", description="Not granted yet: the release right ahead of it, holding the lane or queued."
    )
    held: Hold | None = None
    live: DeploymentRecord | None = Field(default=None, description="Granted: what runs there now.")
    number: int = Field(
        default=0,
        description="Counts up per ledger (0: an older ledger): signals between workflows may arrive out of "
        "order, and a release keeps the latest answer.",
    )


class Unhold(BaseModel):
    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)


class DriftCheck(BaseModel):
    """What the drift schedule of one service in one environment starts a check with."""

    application: str
    service: str
    environment: str
    every: timedelta
    self_heal: bool = False


class DriftReport(BaseModel):
    """What the last drift check of the live deployment found."""

    checked_at: datetime
    version: str
    drifted: bool
    steps: dict[str, str] = Field(default_factory=dict, description="Step -> what differs (drifted steps only).")
    unchecked: dict[str, str] = Field(
        default_factory=dict, description="Step -> why its fetch could not say (not drift: nothing is healed for it)."
    )
    healing: str = Field(default="", description="The release started to correct it, if any.")


class LaneView(BaseModel):
    """The lane query's answer."""

    holder: LaneEntry | None = None
    queue: list[LaneEntry] = Field(default_factory=list)
    hold: Hold | None = None
    live: DeploymentRecord | None = None
    drift: DriftReport | None = None
    unproven: str = Field(default="", description="Why the live record was left out: its release did not record it.")


class LedgerState(BaseModel):
    application: str
    service: str
    environment: str
    records: list[DeploymentRecord] = Field(default_factory=list)
    holder: LaneEntry | None = None
    queue: list[LaneEntry] = Field(default_factory=list)
    hold: Hold | None = None
    drift: DriftReport | None = None
    turns: int = Field(default=0, description="Turns told so far (numbering them), carried by continue-as-new.")


# --- registered applications -----------------------------------------------------------


class ApplicationChange(BaseModel):
    """Update payload of `prodline app apply`: a new revision, as the platform team wrote it."""

    source: str = Field(description="The application file's text, exactly as applied.")
    path: str = Field(description="The application file's path inside its bundle (or its name).")
    bundle: BundleRef | None = Field(default=None, description="The files its rules run.")
    applied_by: str
    comment: str = ""
    signed: Signed | None = Field(
        default=None,
        description="An admin's signature over the change (an ApplyDocument naming its digest and the revision "
        "it replaces); required when the workers are configured with admin keys (PRODLINE_ADMIN_KEYS).",
    )


class Revision(BaseModel):
    """One registered revision of an application."""

    application: str
    number: int
    digest: str = Field(description="SHA-256 of the canonical config and the bundle digest.")
    applied_by: str
    applied_at: datetime
    changes: list[str] = Field(default_factory=list, description="What changed from the revision before.")
    comment: str = ""
    path: str = ""
    bundle: BundleRef | None = None
    signed_by: str = Field(
        default="", description="The admin whose signature was verified, with the key's fingerprint."
    )
    source: str = Field(default="", description="The file's text; empty in `revisions` listings.")


class ApplyAdmission(BaseModel):
    """Input of the admin check of an apply: what the signature must name."""

    application: str
    digest: str = Field(description="The new revision's digest, as the application workflow computed it.")
    replaces: int = Field(description="The revision current now (0: none): the signature must name it.")
    signed: Signed | None = None


class Applied(BaseModel):
    """The answer to an apply: the revision now current, and whether this apply made it."""

    revision: Revision
    created: bool


# --- decisions by people --------------------------------------------------------------------


class Verdict(StrEnum):
    approve = "approve"
    reject = "reject"


class Decision(BaseModel):
    """Update payload of `prodline approve|reject`: bounded, since every one stays in history."""

    request_id: str = Field(max_length=100)
    environment: str = Field(max_length=100)
    by: str = Field(max_length=200)
    verdict: Verdict
    comment: str = Field(default="", max_length=2000)
    signed: Signed | None = Field(
        default=None, description="The approver's signature over a DecisionDocument (`prodline approve --key`)."
    )


class DecisionRecord(BaseModel):
    """A decision as the release judged it: every attempt, counted or not, is kept."""

    request_id: str
    environment: str
    by: str = Field(description="Who decided: the key's owner when signed, else the name given.")
    verdict: Verdict
    comment: str = ""
    at: datetime
    accepted: bool
    reason: str = ""
    progress: str = Field(default="", description="The gate after this decision, e.g. '1/2 approvals'.")
    verified: str = Field(default="", description="How `by` is known: 'ssh SHA256:...' when signed, else empty.")
    signature_digest: str = Field(
        default="", description="SHA-256 of the signed document and its signer's key: each is good for one use."
    )


# --- the release's status: the query's answer and the workflow's result --------------------


class ReleaseState(StrEnum):
    running = "running"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    rejected = "rejected"
    cancelled = "cancelled"
    timed_out = "timed_out"
    rolled_back = "rolled_back"  # a failure, and the version verified before is running again
    rollback_failed = "rollback_failed"  # a failure, and restoring the version before failed too
    superseded = "superseded"  # a newer release of the service took its place in the queue

    @property
    def final(self) -> bool:
        return self not in (ReleaseState.running, ReleaseState.waiting)


# Failure types a release ends with; the client maps them back to states (and exit codes).
FAILURE_TYPES = {
    ReleaseState.failed: "ReleaseFailed",
    ReleaseState.rejected: "ReleaseRejected",
    ReleaseState.timed_out: "ReleaseTimedOut",
    ReleaseState.rolled_back: "ReleaseRolledBack",
    ReleaseState.rollback_failed: "ReleaseRollbackFailed",
    ReleaseState.superseded: "ReleaseSuperseded",
}


class Phase(StrEnum):
    pending = "pending"
    running = "running"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    rejected = "rejected"
    timed_out = "timed_out"
    cancelled = "cancelled"
    skipped = "skipped"
    rolled_back = "rolled_back"


class StepStatus(BaseModel):
    name: str
    kind: str
    phase: Phase = Phase.pending
    summary: str = ""
    plan: str = ""
    plan_digest: str = Field(default="", description="What an approval of this plan signs (the current plan).")
    output: str = Field(default="", description="Tail of what the step printed when applied (secrets masked).")


class EnvironmentStatus(BaseModel):
    name: str
    task_queue: str = Field(default="", description="Where its steps and rules run; empty: the control queue.")
    phase: Phase = Phase.pending
    waiting_on: str = ""
    gate: str = Field(default="", description="The people gate open here ('2: precondition approval'); signed.")
    steps: list[StepStatus] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Event(BaseModel):
    at: datetime
    environment: str = ""
    message: str


class ReleaseStatus(ReleaseRef):
    initiator: str
    initiator_verified: str = Field(default="", description="'ssh SHA256:...' when the start was signed.")
    run_id: str = Field(default="", description="The workflow run: decisions are sent to it.")
    original_run_id: str = Field(
        default="", description="The release's original run (a reset keeps it): signed decisions name it."
    )
    revision: int = Field(default=0, description="The application revision this release obeys (0: older release).")
    revision_digest: str = ""
    bundle: str = Field(default="", description="Digest of the service bundle it deploys.")
    state: ReleaseState = ReleaseState.running
    reason: str = ""
    environments: list[EnvironmentStatus] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    decisions: list[DecisionRecord] = Field(default_factory=list, description="Every approval, rejection and refusal.")

    def environment(self, name: str) -> EnvironmentStatus:
        """The environment called ``name``; KeyError before the plan is resolved or if there is none."""
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(f"release {self.release_id} has no environment {name!r} (yet)")

    def decision_subject(self, environment: str) -> dict[str, Any]:
        """What a decision at the gate open in ``environment`` is about: the fields of a
        DecisionDocument but its verdict, comment, signer and validity. The approver's client
        signs these from the status it showed; the release compares a signed document with
        the same fields of its own status, so the two cannot drift apart."""
        env = self.environment(environment)
        return {
            "release": self.release_id,
            "run": self.original_run_id,
            "environment": env.name,
            "gate": env.gate,
            "plans": {step.name: step.plan_digest for step in env.steps if step.plan_digest},
            "bundle": self.bundle,
            "revision": self.revision,
            "revision_digest": self.revision_digest,
        }


__all__ = [
    "ABORT_STEP",
    "ADMIT_APPLY",
    "APPLICATION_WORKFLOW",
    "APPLY_REFUSED",
    "APPLY_STEP",
    "APPLY_UPDATE",
    "DECIDE_SIGNAL",
    "DECIDE_UPDATE",
    "DRIFT_SIGNAL",
    "DRIFT_WORKFLOW",
    "ENSURE_DRIFT_CHECKS",
    "EVALUATE_RULE",
    "FAILURE_TYPES",
    "FETCH_STEP",
    "FINAL_STATUS_MEMO",
    "LANE_QUERY",
    "LANE_REQUEST",
    "LANE_SIGNAL",
    "LEDGER_WORKFLOW",
    "NON_RETRYABLE_CONFIG",
    "PLAN_STEP",
    "PROMOTE_STEP",
    "READ_LANE",
    "RECORDS_QUERY",
    "RECORD_DEPLOYMENT",
    "RECORD_SIGNAL",
    "RELEASE_WORKFLOW",
    "RESOLVE_RELEASE",
    "REVISIONS_QUERY",
    "REVISION_MEMO",
    "REVISION_QUERY",
    "ROLLOUT_UPDATE",
    "STALE_PLAN",
    "STATUS_QUERY",
    "TURN_SIGNAL",
    "UNHEALTHY",
    "UNHOLD_UPDATE",
    "WAIT_STEP",
    "ApplicationChange",
    "Applied",
    "ApplyAdmission",
    "Decision",
    "DecisionRecord",
    "DeploymentKind",
    "DeploymentRecord",
    "DeploymentState",
    "DriftCheck",
    "DriftReport",
    "EnvironmentStatus",
    "Event",
    "Hold",
    "LaneEntry",
    "LaneRequest",
    "LaneTurn",
    "LaneView",
    "LedgerState",
    "Outcome",
    "Phase",
    "ReleaseRef",
    "ReleaseState",
    "ReleaseStatus",
    "Revision",
    "RolloutCommand",
    "RuleResult",
    "RuleRun",
    "RunContext",
    "StepAction",
    "StepProgress",
    "StepResult",
    "StepRun",
    "StepStatus",
    "Unhold",
    "Verdict",
    "application_id",
    "drift_schedule_id",
    "ledger_id",
    "live_deployment",
]
