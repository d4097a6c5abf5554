"""The interface every step kind implements, and the values that cross it.

A runner is a small object with ``plan``, ``apply`` and ``fetch`` (rollback
joins them with the release-safety work). Runners are thin adapters: they
translate a step's config into calls to a real tool and its results back
into :class:`StepResult`; retries, timeouts and ordering belong to Temporal
and the workflow.

The helpers below are what kinds with saved plans share: the plan file goes
to an artifact store (:func:`saved_plan`), apply gets back exactly the
approved one (:func:`approved_plan_file`), and outputs are published with the
sensitive ones kept out of history (:func:`applied`). A store of ``None``
means :func:`~prodline.artifacts.store.open_store`, looked up at use.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from temporalio.exceptions import ApplicationError

from prodline.artifacts.store import ArtifactCorrupt, ArtifactMissing, ArtifactStore, sha256
from prodline.config.steps import StepSpec
from prodline.contracts import NON_RETRYABLE_CONFIG, STALE_PLAN, StepAction, StepProgress, StepResult, StepRun

from ..process import redact
from ..workspace import shared_store

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
        raise _unsupported(run, "roll back yet")

    # Kinds whose spec says ``waits``: after apply, wait until what was applied is healthy (or,
    # for kinds that say ``drives_pauses``, stopped at a pause). Heartbeat progress meanwhile.
    async def wait(self, run: StepRun, spec: SpecT) -> StepProgress:
        raise _unsupported(run, "wait for health")

    # Kinds whose spec says ``drives_pauses``: go on from a pause, or give up and go back to stable.
    async def promote(self, action: StepAction, spec: SpecT) -> StepProgress:
        raise _unsupported(action.run, "be promoted")

    async def abort(self, action: StepAction, spec: SpecT) -> StepProgress:
        raise _unsupported(action.run, "be aborted")


def _unsupported(run: StepRun, what: str) -> ApplicationError:
    return ApplicationError(f"{run.step.kind} steps cannot {what}", type=NON_RETRYABLE_CONFIG, non_retryable=True)


def approved_plan(run: StepRun, store: ArtifactStore | None = None) -> bytes:
    """The saved plan that was shown and approved, or an error saying why it cannot be applied."""
    planned = run.plan
    if planned is None or not planned.artifact or not planned.digest:
        raise ApplicationError(
            f"a {run.step.kind} step is applied only from its approved plan, and none was given",
            type=NON_RETRYABLE_CONFIG,
            non_retryable=True,
        )
    try:
        data = (store or shared_store()).get(planned.artifact)
    except (ArtifactMissing, ArtifactCorrupt) as exc:
        # Gone (a local store on another machine, an expired object) or damaged: never apply
        # it; treat the plan as stale, so the workflow plans again and asks for approval again.
        raise ApplicationError(
            f"the approved plan cannot be used: {exc}", type=STALE_PLAN, non_retryable=True
        ) from None
    if sha256(data) != planned.digest:
        raise ApplicationError(
            "the stored plan differs from the approved one (checksum mismatch)", type=STALE_PLAN, non_retryable=True
        )
    return data


@contextlib.contextmanager
def scratch_file(name: str) -> Iterator[Path]:
    """A path in a fresh folder only the worker's user can read, removed afterwards: plans can hold secrets."""
    with tempfile.TemporaryDirectory(prefix="prodline-") as folder:
        yield Path(folder) / name


def saved_plan(
    run: StepRun, store: ArtifactStore | None, planfile: Path, *, summary: str, output: str, changed: bool
) -> StepResult:
    """The result of a plan: the tool's plan file goes to the store (it can hold secrets), the
    result carries its key and SHA-256, so apply can refuse any other file."""
    key = run.artifact_key(planfile.name)
    digest = (store or shared_store()).put(key, planfile.read_bytes())
    return StepResult(summary=summary, output=output, changed=changed, artifact=key, digest=digest)


@contextlib.contextmanager
def approved_plan_file(run: StepRun, store: ArtifactStore | None, name: str) -> Iterator[Path]:
    """The approved plan (checked against its SHA-256) in a scratch file, for the tool to apply."""
    data = approved_plan(run, store)
    with scratch_file(name) as path:
        path.write_bytes(data)
        yield path


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


@dataclass(frozen=True)
class Published:
    visible: dict[str, str]  # non-sensitive outputs, for history
    sensitive: list[str]  # names of the sensitive ones
    key: str  # where all of them are in the store
    digest: str  # their SHA-256: later steps refuse any other bytes
    masks: list[str]  # strings to mask in the step's output


def publish_outputs(
    run: StepRun, values: dict[str, Any], sensitive: set[str], store: ArtifactStore | None = None
) -> Published:
    """Store every output (for later steps); what history may know of them."""
    key = run.artifact_key("outputs.json")
    digest = (store or shared_store()).put(key, json.dumps(values, default=str).encode())
    visible = {name: as_text(v) for name, v in values.items() if name not in sensitive}
    masks = [as_text(values[name]) for name in sensitive]
    masks += [
        v for name in sensitive if isinstance(values[name], dict) for v in values[name].values() if isinstance(v, str)
    ]
    return Published(visible, sorted(sensitive), key, digest, masks)


def applied(
    run: StepRun,
    store: ArtifactStore | None,
    *,
    summary: str,
    output: str,
    values: dict[str, Any],
    sensitive: set[str],
    masked: list[str],
) -> StepResult:
    """The result of an apply: every output stored for later steps, the non-sensitive ones in the
    result, and the sensitive values masked in ``output`` along with the step's own secrets."""
    published = publish_outputs(run, values, sensitive, store)
    return StepResult(
        summary=summary,
        output=redact(output, [*masked, *published.masks]),
        outputs=published.visible,
        sensitive_outputs=published.sensitive,
        outputs_key=published.key,
        outputs_digest=published.digest,
    )
