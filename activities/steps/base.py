"""The interface every step kind implements, and the values that cross it.

A runner is a small object with ``plan``, ``apply`` and ``fetch`` (rollback
joins them with the release-safety work). Runners are thin adapters: they
translate a step's config into calls to a real tool and its results back
into :class:`StepResult`; retries, timeouts and ordering belong to Temporal
and the workflow.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from temporalio.exceptions import ApplicationError

from prodline.config.steps import StepSpec
from prodline.contracts import NON_RETRYABLE_CONFIG, STALE_PLAN, StepResult, StepRun

from ..artifacts import ArtifactMissing, default_store, sha256

SpecT = TypeVar("SpecT", bound=StepSpec)


class StepRunner(ABC, Generic[SpecT]):
    """One step kind: a thin adapter from its config model (``spec_type``) to a real tool.

    Every action gets the run (release, environment, approved plan) and the
    step's own config, typed. ``plan`` shows what ``apply`` would change (kinds
    whose spec says ``has_plan`` is false are never asked); ``apply`` must
    converge when run twice; ``fetch`` tells whether what is live differs
    (drift). ``rollback`` re-deploys what a verified deployment recorded; the
    release-safety work fills it in per kind.
    """

    spec_type: ClassVar[type[StepSpec]]

    @abstractmethod
    async def plan(self, run: StepRun, spec: SpecT) -> StepResult: ...

    @abstractmethod
    async def apply(self, run: StepRun, spec: SpecT) -> StepResult: ...

    @abstractmethod
    async def fetch(self, run: StepRun, spec: SpecT) -> StepResult: ...

    async def rollback(self, run: StepRun, spec: SpecT) -> StepResult:
        raise ApplicationError(
            f"{run.step.kind} steps cannot roll back yet", type=NON_RETRYABLE_CONFIG, non_retryable=True
        )


def approved_plan(run: StepRun) -> bytes:
    """The saved plan that was shown and approved, or an error saying why it cannot be applied."""
    planned = run.plan
    if planned is None or not planned.artifact or not planned.digest:
        raise ApplicationError(
            f"a {run.step.kind} step is applied only from its approved plan, and none was given",
            type=NON_RETRYABLE_CONFIG,
            non_retryable=True,
        )
    try:
        data = default_store().get(planned.artifact)
    except ArtifactMissing as exc:
        # Plans live where they were made (local store): treat as stale, so the workflow plans again.
        raise ApplicationError(
            f"the approved plan is not available on this worker: {exc}", type=STALE_PLAN, non_retryable=True
        ) from None
    if sha256(data) != planned.digest:
        raise ApplicationError(
            "the stored plan differs from the approved one (checksum mismatch)", type=STALE_PLAN, non_retryable=True
        )
    return data


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def publish_outputs(
    run: StepRun, values: dict[str, Any], sensitive: set[str]
) -> tuple[dict, list[str], str, list[str]]:
    """Store every output (for later steps), return (visible, sensitive names, store key, strings to mask)."""
    key = run.artifact_key("outputs.json")
    default_store().put(key, json.dumps(values, default=str).encode())
    visible = {name: as_text(v) for name, v in values.items() if name not in sensitive}
    masks = [as_text(values[name]) for name in sensitive]
    masks += [
        v for name in sensitive if isinstance(values[name], dict) for v in values[name].values() if isinstance(v, str)
    ]
    return visible, sorted(sensitive), key, masks
