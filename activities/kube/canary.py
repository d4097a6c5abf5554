"""An Argo Rollouts canary, read and driven the way its own tools do.

* :func:`rollout_phase`: ``GetRolloutPhase`` then ``CalculateRolloutPhase``
  (argo-rollouts ``utils/rollout/rolloututil.go``), in their order: the phase is
  only trusted once ``status.observedGeneration`` (a *string*) equals
  ``metadata.generation``; a controller pause with no pause condition left is
  "unpausing"; then the controller's ``status.phase``, else the client-side
  calculation.
* :func:`canary_position`: which step it is at (``currentStepIndex``, nil = 0,
  ``utils/replicaset/canary.go`` ``GetCurrentCanaryStep``), which of its steps are
  indefinite pauses (``pause: {}``; a pause with a duration ends on its own and is
  no gate), whether it stands at one now (the step, a ``CanaryPauseStep`` pause
  condition, the generation observed: ``rollout/pause.go``), fully promoted
  (``IsFullyPromoted``: ``currentPodHash == stableRS``), aborted.
* :func:`promote_patch` and :func:`abort_patch`: the merge patches of
  ``kubectl argo rollouts promote`` / ``abort`` (``pkg/kubectl-argo-rollouts/cmd/
  promote/promote.go`` ``getPatches``, ``abort/abort.go``) for the status
  subresource, each carrying ``metadata.resourceVersion`` so the API server
  refuses it (409) if the Rollout changed since it was read (kubernetes#87951).
  Unlike the plugin, a plain promote is refused unless the Rollout still stands at
  the pause the caller expects: the plugin's other branch, promoting a canary in
  the middle of an analysis or experiment, bumps ``currentStepIndex`` and so
  *skips the running step*; prodline never does that.

Send the status patch first, then :func:`spec_unpause_patch` (when not None) to
the main resource, as the plugin does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prodline.contracts import StepProgress
from prodline.errors import WrongState

from .health import Unhealthy, progress

HEALTHY, DEGRADED, PROGRESSING, PAUSED = "Healthy", "Degraded", "Progressing", "Paused"
CANARY_PAUSE_STEP = "CanaryPauseStep"
# utils/conditions/conditions.go
ABORTED_REASON = "RolloutAborted"
TIMED_OUT_REASON = "ProgressDeadlineExceeded"
INVALID_SPEC = "InvalidSpec"
# AnalysisPhase.Completed()
ANALYSIS_COMPLETED = frozenset({"Successful", "Failed", "Error", "Inconclusive"})


class NotAtPause(WrongState):
    """A promote refused: the Rollout no longer stands at the pause it was to be promoted from."""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}  # pyright: ignore[reportUnknownVariableType]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []  # pyright: ignore[reportUnknownVariableType]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def generation_observed(ro: Mapping[str, Any]) -> bool:
    """``isGenerationObserved``: a non-numeric observedGeneration (v0.9 hash) or a larger one counts as observed."""
    observed = _map(ro.get("status")).get("observedGeneration")
    generation = _int(_map(ro.get("metadata")).get("generation"))
    try:
        number = int(str(observed)) if observed is not None else None
    except ValueError:
        return True
    if number is None:
        # Go's strconv.Atoi("") errors: an unset observedGeneration counts as observed, as in Argo.
        return True
    return number >= generation


def rollout_phase(ro: Mapping[str, Any]) -> tuple[str, str]:
    """(phase, message): Healthy, Degraded, Progressing or Paused, as ``kubectl argo rollouts status`` sees it."""
    status = _map(ro.get("status"))
    if not generation_observed(ro):
        return PROGRESSING, "waiting for rollout spec update to be observed"
    if status.get("controllerPause") and not _list(status.get("pauseConditions")):
        return PROGRESSING, "waiting for rollout to unpause"  # IsUnpausing
    if status.get("phase"):
        return str(status["phase"]), str(status.get("message") or "")  # Rollouts 1.0+: set by the controller
    return calculate_rollout_phase(_map(ro.get("spec")), status)


def calculate_rollout_phase(spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[str, str]:
    """``CalculateRolloutPhase``, check for check (what controllers before 1.0 left to clients)."""
    for cond in _list(status.get("conditions")):
        cond = _map(cond)
        if cond.get("type") == INVALID_SPEC:
            return DEGRADED, f"{INVALID_SPEC}: {cond.get('message', '')}"
        if cond.get("reason") in (ABORTED_REASON, TIMED_OUT_REASON):
            return DEGRADED, f"{cond['reason']}: {cond.get('message', '')}"
    if spec.get("paused"):
        return PAUSED, "manually paused"
    for cond in _list(status.get("pauseConditions")):
        return PAUSED, str(_map(cond).get("reason", ""))
    restart_at = spec.get("restartAt")
    if restart_at is not None and restart_at != status.get("restartedAt"):
        return PROGRESSING, "rollout is restarting"
    replicas = spec.get("replicas")
    updated = _int(status.get("updatedReplicas"))
    if updated < (_int(replicas) if replicas is not None else 1):  # defaults.GetReplicasOrDefault
        return PROGRESSING, "more replicas need to be updated"
    if _int(status.get("availableReplicas")) < updated:
        return PROGRESSING, "updated replicas are still becoming available"
    strategy = _map(spec.get("strategy"))
    stable, current = str(status.get("stableRS") or ""), str(status.get("currentPodHash") or "")
    if strategy.get("blueGreen") is not None:
        blue_green = _map(status.get("blueGreen"))
        active = str(blue_green.get("activeSelector") or "")
        if not active or active != current:
            return PROGRESSING, "active service cutover pending"
        if not stable or stable != current:
            run = blue_green.get("postPromotionAnalysisRunStatus")  # waitingForBlueGreenPostPromotionAnalysis
            waiting = _map(strategy["blueGreen"]).get("postPromotionAnalysis") is not None and (
                run is None or _map(run).get("status") not in ANALYSIS_COMPLETED
            )
            if waiting:
                return PROGRESSING, "waiting for analysis to complete"
            return PROGRESSING, "waiting for post-promotion verification to complete"
    elif strategy.get("canary") is not None:
        if _map(strategy["canary"]).get("trafficRouting") is None and _int(status.get("replicas")) > updated:
            return PROGRESSING, "old replicas are pending termination"  # basic canary only
        if not stable or stable != current:
            return PROGRESSING, "waiting for all steps to complete"
    return HEALTHY, ""


def is_indefinite_pause(step: Any) -> bool:
    """``pause: {}``: a pause step without a duration, held until promoted (a null ``pause`` is no pause step)."""
    pause = _map(step).get("pause")
    return isinstance(pause, Mapping) and pause.get("duration") is None  # pyright: ignore[reportUnknownMemberType]


@dataclass(frozen=True)
class CanaryPosition:
    """Where a canary stands: its step, its pause gates, whether it is held at one, promoted, aborted."""

    steps: list[dict[str, Any]]
    current_step_index: int
    pause_steps: tuple[int, ...]  # step indexes of the `pause: {}` steps; pause N is pause_steps[N - 1]
    paused_at_pause: int  # 1-based ordinal of the `pause: {}` step it is held at; 0: not held at one
    pod_hash: str
    stable: str
    fully_promoted: bool
    aborted: bool
    message: str
    pause_reasons: tuple[str, ...] = field(default=())

    def ordinal(self, step_index: int) -> int:
        """The pause number (1-based) of the step at ``step_index``; 0 when it is no `pause: {}` step."""
        return self.pause_steps.index(step_index) + 1 if step_index in self.pause_steps else 0


def canary_position(ro: Mapping[str, Any]) -> CanaryPosition:
    spec, status = _map(ro.get("spec")), _map(ro.get("status"))
    steps = [dict(_map(s)) for s in _list(_map(_map(spec.get("strategy")).get("canary")).get("steps"))]
    index_value = status.get("currentStepIndex")
    index = _int(index_value) if index_value is not None else 0  # GetCurrentCanaryStep: nil is 0
    pause_steps = tuple(i for i, step in enumerate(steps) if is_indefinite_pause(step))
    reasons = tuple(str(_map(c).get("reason", "")) for c in _list(status.get("pauseConditions")))
    held = index in pause_steps and CANARY_PAUSE_STEP in reasons and generation_observed(ro)
    ordinal = pause_steps.index(index) + 1 if held else 0
    pod_hash, stable = str(status.get("currentPodHash") or ""), str(status.get("stableRS") or "")
    # IsFullyPromoted compares the two; both empty (the controller has not seen it yet) is not promoted here.
    fully_promoted = bool(pod_hash) and pod_hash == stable
    aborted = bool(status.get("abort")) or any(
        _map(c).get("reason") == ABORTED_REASON for c in _list(status.get("conditions"))
    )
    where = f"step {min(index, len(steps))}/{len(steps)}" if steps else "no steps"
    if ordinal:
        where += f", held at pause {ordinal}"
    if aborted:
        where += ", aborted"
    elif fully_promoted:
        where += ", fully promoted"
    replicas = progress({"kind": "Rollout", "spec": spec, "status": status})
    return CanaryPosition(
        steps=steps,
        current_step_index=index,
        pause_steps=pause_steps,
        paused_at_pause=ordinal,
        pod_hash=pod_hash,
        stable=stable,
        fully_promoted=fully_promoted,
        aborted=aborted,
        message=f"{where} ({replicas})",
        pause_reasons=reasons,
    )


def to_progress(position: CanaryPosition, phase: tuple[str, str]) -> StepProgress:
    """The step's progress: done only when Healthy and fully promoted; paused at a `pause: {}` gate."""
    name, detail = phase
    return StepProgress(
        done=name == HEALTHY and position.fully_promoted,
        paused=position.paused_at_pause > 0,
        pause=position.paused_at_pause,
        step_index=position.current_step_index,
        steps=len(position.steps),
        pod_hash=position.pod_hash,
        message=f"{name}: {detail}; {position.message}" if detail else f"{name}; {position.message}",
    )


def rollout_progress(ro: Mapping[str, Any]) -> StepProgress:
    """Phase and position in one; a Degraded Rollout (aborted, deadline, invalid spec) raises :class:`Unhealthy`."""
    phase = rollout_phase(ro)
    if phase[0] == DEGRADED:
        reason = ABORTED_REASON if phase[1].startswith(ABORTED_REASON) else DEGRADED
        name = str(_map(ro.get("metadata")).get("name", ""))
        raise Unhealthy(f'rollout "{name}" is Degraded: {phase[1]}', reason)
    return to_progress(canary_position(ro), phase)


def _precondition(ro: Mapping[str, Any]) -> dict[str, Any]:
    version = _map(ro.get("metadata")).get("resourceVersion")
    if not version:
        raise ValueError("the Rollout was read without metadata.resourceVersion; read it from the API server")
    return {"resourceVersion": str(version)}


def promote_patch(ro: Mapping[str, Any], expected: StepProgress | None, full: bool) -> dict[str, Any] | None:
    """The status-subresource merge patch of ``kubectl argo rollouts promote [--full]``.

    ``full``: ``promoteFull`` when not yet fully promoted (None: nothing to do). Plain:
    only when held at a `pause: {}` step, and at ``expected``'s step and pod hash when
    given; otherwise :class:`NotAtPause`.
    """
    status = _map(ro.get("status"))
    if full:
        if str(status.get("currentPodHash") or "") == str(status.get("stableRS") or ""):
            return None
        return {"metadata": _precondition(ro), "status": {"promoteFull": True}}
    position = canary_position(ro)
    name = str(_map(ro.get("metadata")).get("name", ""))
    if not position.paused_at_pause:
        raise NotAtPause(
            f'rollout "{name}" is not held at a pause step ({position.message}); '
            "promoting now would skip a running step, so nothing was done"
        )
    if expected is not None and (
        expected.step_index != position.current_step_index or expected.pod_hash != position.pod_hash
    ):
        raise NotAtPause(
            f'rollout "{name}" moved since it was to be promoted: expected step {expected.step_index} '
            f"of pod hash {expected.pod_hash or '(none)'}, found step {position.current_step_index} "
            f"of pod hash {position.pod_hash or '(none)'}; nothing was done"
        )
    patch: dict[str, Any] = {"pauseConditions": None}
    analysis = _map(_map(status.get("canary")).get("currentStepAnalysisRunStatus"))
    if analysis.get("status") == "Inconclusive" and status.get("controllerPause"):
        # getPatches' inconclusive branch: also lift the controller pause and move past this step.
        index = position.current_step_index
        patch = {"pauseConditions": None, "controllerPause": False,
                 "currentStepIndex": index + 1 if index < len(position.steps) else index}  # fmt: skip
    return {"metadata": _precondition(ro), "status": patch}


def spec_unpause_patch(ro: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"spec": {"paused": false}}`` for a Rollout paused in its spec (plain promote's second patch), else None."""
    return {"spec": {"paused": False}} if _map(ro.get("spec")).get("paused") else None


def abort_patch(ro: Mapping[str, Any]) -> dict[str, Any]:
    """``kubectl argo rollouts abort``: ``{"status": {"abort": true}}``, guarded by resourceVersion."""
    return {"metadata": _precondition(ro), "status": {"abort": True}}


def retry_patch(ro: Mapping[str, Any]) -> dict[str, Any]:
    """``kubectl argo rollouts retry``: ``{"status": {"abort": false}}``, guarded by resourceVersion.

    Argo clears an abort by itself only when the pod template or the steps change: the same
    version applied again stays aborted until retried (its canary then starts from step 1).
    """
    return {"metadata": _precondition(ro), "status": {"abort": False}}
