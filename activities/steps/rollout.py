"""The ``rollout`` step: an Argo Rollouts canary, applied like ``kubernetes``, then driven pause by pause.

Plan, apply and fetch are the ``kubernetes`` step's (the Rollout is one more
object of the set); a Rollout still aborted after the apply (the same version
released again after an abort: Argo clears an abort only when the template or
steps change) is retried, as ``kubectl argo rollouts retry`` does. Then:

* **wait** polls the Rollout (``spec.rollout``, or the one Rollout of the set)
  and returns when it is held at a ``pause: {}`` step (which pause, its step
  index and pod hash: what promote will insist on) or Healthy and fully
  promoted; then the set's other workloads are waited for like the kubernetes
  step's, and leftovers pruned. Degraded (aborted, progress deadline, invalid
  spec) is ``Unhealthy`` with Argo's message.
* **promote** is ``kubectl argo rollouts promote [--full]``: a merge patch of
  the status subresource (the main resource when the API has no ``/status``,
  as the plugin falls back), then ``spec.paused: false`` if set; only while the
  Rollout is still held at the pause the workflow saw, so a step that is
  running is never skipped. The patch carries the resourceVersion it was built
  from: a 409 means the Rollout moved, so it is read and checked again.
* **abort** is ``kubectl argo rollouts abort``: ``status.abort: true``. The
  workflow aborts on every way out, a cancel or failure during apply
  included: before apply reported, the Rollout is found in the approved plan;
  one apply never got to (not in the cluster) is nothing to abort, and neither
  is one that is not in a canary (its controller saw its spec and it is fully
  promoted, ``currentPodHash == stableRS``).

Both are idempotent: a Rollout already past the pause (an earlier attempt
promoted it and died) is not patched again, nor is an aborted one aborted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from temporalio.exceptions import ApplicationError

from prodline.config.steps import KubernetesStep, RolloutStep
from prodline.contracts import UNHEALTHY, StepAction, StepProgress, StepResult, StepRun

from ..kube.api import UNAVAILABLE, http_status
from ..kube.canary import (
    CANARY_PAUSE_STEP,
    CanaryPosition,
    NotAtPause,
    abort_patch,
    canary_position,
    generation_observed,
    promote_patch,
    retry_patch,
    rollout_phase,
    rollout_progress,
    spec_unpause_patch,
    to_progress,
)
from ..kube.health import WAITED_KINDS, Unhealthy
from ..kube.manifests import object_key
from .base import approved_plan
from .kubernetes import (
    KubernetesRunner,
    Obj,
    Session,
    config_error,
    heartbeat,
    in_thread,
    log,
    progress_details,
    unhealthy_error,
)

ROLLOUT = "Rollout"
# Error type of a promote refused because the Rollout is no longer where the workflow saw it.
NOT_AT_PAUSE = "NotAtPause"
CONFLICT_RETRIES = 5
RETRIED = "the Rollout was aborted; retried, its canary starts again from step 1"
OBSERVE_TIMEOUT = 30.0  # seconds a promote waits for the controller to see the latest spec  # re-reads after a 409 (the controller wrote the Rollout meanwhile)


class RolloutRunner(KubernetesRunner):
    spec_type = RolloutStep

    def rollout_of(self, run: StepRun, spec: KubernetesStep, objs: Sequence[Obj]) -> Obj:
        """The Rollout the step drives: ``rollout:``, else the one Rollout among its objects."""
        name = spec.rollout if isinstance(spec, RolloutStep) else None
        rollouts = _rollouts(objs)
        if name is not None:
            named = [o for o in rollouts if o["metadata"]["name"] == name]
            if not named:
                found = ", ".join(o["metadata"]["name"] for o in rollouts) or "none"
                raise config_error(
                    f"step {run.step.name}: rollout.rollout names {name!r}; Rollouts in the set: {found}"
                )
            return named[0]
        if len(rollouts) != 1:
            found = ", ".join(o["metadata"]["name"] for o in rollouts)
            raise config_error(
                f"step {run.step.name}: the manifests have {len(rollouts)} Rollouts{f' ({found})' if found else ''}; "
                "name the one to drive in rollout.rollout"
                if rollouts
                else f"step {run.step.name}: the manifests have no Rollout (argoproj.io/v1alpha1); add one, "
                "or use a kubernetes step"
            )
        return rollouts[0]

    async def _target(self, session: Session, run: StepRun) -> tuple[list[Obj], Obj]:
        objs = await in_thread(lambda: self.applied_objects(run))
        return objs, self.rollout_of(run, session.spec, objs)

    # --- apply ------------------------------------------------------------------------------

    async def apply(self, run: StepRun, spec: KubernetesStep) -> StepResult:
        async def apply(session: Session) -> StepResult:
            result = await self._apply(session, run, spec)
            objs = json.loads(approved_plan(run, self.store))["objects"]
            retried = await in_thread(lambda: [r for r in _rollouts(objs) if self._retry_aborted(session, run, r)])
            if retried:
                lines = [result.output] if result.output else []
                lines += [RETRIED if len(_rollouts(objs)) == 1 else f"{object_key(r)}: {RETRIED}" for r in retried]
                result = result.model_copy(update={"output": "\n".join(lines), "changed": True})
            return result

        return await self.masked(run, spec, apply)

    @staticmethod
    def _retry_aborted(session: Session, run: StepRun, rollout: Obj) -> bool:
        """Retry ``rollout`` if it is still aborted; whether it was."""
        for _ in range(CONFLICT_RETRIES):
            live = _read(session, rollout)
            if not (live.get("status") or {}).get("abort"):
                return False
            if _patched(session, live, retry_patch(live)):
                log.info("rollout.retried", step=run.step.name, rollout=object_key(rollout))
                return True
        raise _conflicts(run, "retry")

    # --- wait -------------------------------------------------------------------------------

    async def wait(self, run: StepRun, spec: KubernetesStep) -> StepProgress:
        return await self.masked(run, spec, lambda session: self._wait(session, run))

    async def _wait(self, session: Session, run: StepRun) -> StepProgress:
        objs, to_prune = await in_thread(lambda: self.applied_set(run))
        rollout = self.rollout_of(run, session.spec, objs)
        details = progress_details("waiting for the Rollout")
        interval = session.spec.poll_interval.total_seconds()
        while True:
            live = await in_thread(lambda: _read(session, rollout), details)
            try:
                progress = rollout_progress(live)
            except Unhealthy as exc:
                raise unhealthy_error(session, exc, live) from None
            if progress.paused:
                return progress
            if progress.done:
                break
            details.update(progress.model_dump())
            heartbeat(details)
            await asyncio.sleep(interval)  # a cancelled activity stops here
        others = [o for o in objs if o["kind"] in WAITED_KINDS]
        message = progress.message
        if others:
            message += "; " + await self.wait_healthy(session, others)
        done = await self.finish(session, objs, to_prune, message)
        return progress.model_copy(update={"message": done.message})

    # --- promote and abort ------------------------------------------------------------------

    async def promote(self, action: StepAction, spec: KubernetesStep) -> StepProgress:
        async def promote(session: Session) -> StepProgress:
            _, rollout = await self._target(session, action.run)
            return await in_thread(lambda: self._promote(session, rollout, action))

        return await self.masked(action.run, spec, promote)

    def _promote(self, session: Session, rollout: Obj, action: StepAction) -> StepProgress:
        for _ in range(CONFLICT_RETRIES):
            live = self._observed(session, rollout, action.run)
            at = None if action.full else action.at
            if at is not None and _already_past(canary_position(live), at):
                return _progress(live)  # promoted by an earlier attempt (or the operator)
            try:
                patch = promote_patch(live, at, action.full)
            except NotAtPause as exc:
                raise ApplicationError(
                    f"step {action.run.step.name}: {exc}", type=NOT_AT_PAUSE, non_retryable=True
                ) from None
            if patch is not None and not _patched(session, live, patch):
                continue  # 409: it changed since it was read; read and check again
            unpause = spec_unpause_patch(live)
            if unpause is not None:
                session.api.merge_patch(live, unpause)
            return _progress(_read(session, rollout))
        raise _conflicts(action.run, "promote")

    @staticmethod
    def _observed(session: Session, rollout: Obj, run: StepRun) -> Obj:
        """The Rollout once its controller has seen its latest spec: before that, its pod hash
        and steps describe the previous template (promoting --full would see nothing to do)."""
        interval = max(0.05, session.spec.poll_interval.total_seconds())
        deadline = time.monotonic() + OBSERVE_TIMEOUT
        live = _read(session, rollout)
        while not generation_observed(live):
            if time.monotonic() > deadline:
                raise ApplicationError(
                    f"step {run.step.name}: the Rollout controller has not observed {object_key(rollout)}'s "
                    f"latest spec after {OBSERVE_TIMEOUT:.0f}s (is Argo Rollouts running?)",
                    type=UNAVAILABLE,
                )
            time.sleep(interval)
            live = _read(session, rollout)
        return live

    async def abort(self, action: StepAction, spec: KubernetesStep) -> StepProgress:
        return await self.masked(action.run, spec, lambda session: in_thread(lambda: self._abort(session, action)))

    def _abort_target(self, session: Session, run: StepRun) -> Obj | None:
        """The Rollout to abort: from what apply deployed or, before apply reported (cancelled or
        failed during it), from the approved plan; None before there is a plan."""
        if run.applied is not None and run.applied.applied_key:
            objs = self.applied_objects(run)
        elif run.plan is not None and run.plan.artifact:
            objs = json.loads(approved_plan(run, self.store))["objects"]
        else:
            return None
        return self.rollout_of(run, session.spec, objs)

    def _abort(self, session: Session, action: StepAction) -> StepProgress:
        rollout = self._abort_target(session, action.run)
        if rollout is None:  # no plan yet
            return StepProgress(message="no Rollout to abort")
        for _ in range(CONFLICT_RETRIES):
            live = session.api.get(rollout)
            if live is None:  # apply never got to it
                return StepProgress(message="no Rollout to abort")
            position = canary_position(live)
            if position.aborted:
                return _progress(live)
            if position.fully_promoted and generation_observed(live):
                return _progress(live)  # no canary in flight: aborting would only mark it Degraded
            if _patched(session, live, abort_patch(live)):
                return _progress(_read(session, rollout))
        raise _conflicts(action.run, "abort")


def _rollouts(objs: Sequence[Obj]) -> list[Obj]:
    return [o for o in objs if o.get("kind") == ROLLOUT and str(o.get("apiVersion", "")).startswith("argoproj.io/")]


def _read(session: Session, rollout: Obj) -> Obj:
    live = session.api.get(rollout)
    if live is None:
        raise ApplicationError(
            f"step {session.run.step.name}: {object_key(rollout)} is gone from the cluster",
            type=UNHEALTHY,
            non_retryable=True,
        )
    return live


def _patched(session: Session, live: Obj, patch: dict[str, Any]) -> bool:
    """Merge-patch the Rollout's status (its main resource where there is no /status); False on a 409."""
    try:
        session.api.merge_patch(live, patch, status=True)
    except ApplicationError as exc:
        status = http_status(exc)
        if status == 409:
            return False
        if status != 404:
            raise
        try:
            session.api.merge_patch(live, patch)
        except ApplicationError as again:
            if http_status(again) == 409:
                return False
            raise
    return True


def _already_past(position: CanaryPosition, at: StepProgress) -> bool:
    """Whether the canary went on from the pause ``at`` (same pod hash): a later step, fully
    promoted, or the pause lifted and the controller not yet moved on."""
    if position.pod_hash != at.pod_hash or position.aborted:
        return False
    if position.fully_promoted or position.current_step_index > at.step_index:
        return True
    return position.current_step_index == at.step_index and CANARY_PAUSE_STEP not in position.pause_reasons


def _progress(live: Obj) -> StepProgress:
    """Where it stands, without raising for Degraded (an abort's result is Degraded)."""
    return to_progress(canary_position(live), rollout_phase(live))


def _conflicts(run: StepRun, what: str) -> ApplicationError:
    return ApplicationError(
        f"step {run.step.name}: the Rollout kept changing while trying to {what} it; trying again",
        type=UNAVAILABLE,
    )
