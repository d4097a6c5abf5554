"""The fake cluster's controllers: they write ``status`` the way the real ones would, one tick at a time.

There are no timers and no threads: an object's controller advances by exactly one tick
each time a client GETs that one object (a status read; LISTs and the fake's own
``FakeCluster.get`` do not tick, ``FakeCluster.tick`` does). Tests are therefore
deterministic: "ready after N polls", whatever the machine's speed.

Counting ticks ``t`` from the last change of ``metadata.generation``:

* **Deployment**: ``t == 1``: not observed yet (``status.observedGeneration`` still the old
  one). From ``t == 2`` observed: ``replicas`` and ``updatedReplicas`` = ``spec.replicas``,
  ``readyReplicas``/``availableReplicas`` 0 (the counts are coarse: no old ReplicaSets);
  from ``t == 1 + ready_after`` (and at least 2) all of them = ``spec.replicas``, conditions
  ``Available`` True and ``Progressing`` True reason ``NewReplicaSetAvailable``. The
  annotation ``deployment.kubernetes.io/revision`` counts template changes. A container
  whose image contains one of ``broken_images`` never gets available; from
  ``t == 1 + deadline_after`` ``Progressing`` is False, reason ``ProgressDeadlineExceeded``.
* **StatefulSet**: the same timing; ``updateRevision`` = ``NAME-HASH`` of the template,
  once ready ``readyReplicas`` = replicas, ``updatedReplicas`` = replicas - partition and
  ``currentRevision`` = ``updateRevision`` only when nothing is held back by the partition.
  A broken image is never ready (StatefulSets have no progress deadline).
* **DaemonSet**: the cluster has 3 nodes: ``desiredNumberScheduled`` is always 3, and
  ``updatedNumberScheduled``/``numberAvailable`` reach 3 with the same timing.
* **CustomResourceDefinition**: ``NamesAccepted`` at once, ``Established`` True after
  ``crd_established_after`` ticks in total (0: on creation); never reset. Only then do its
  resources appear in discovery.
* **Rollout** (Argo Rollouts, canary strategy only: ``blueGreen`` or no strategy is reported
  as ``InvalidSpec``/Degraded). ``currentPodHash`` = first 10 hex digits of sha256 of the
  canonical JSON of ``spec.template``; ``status.observedGeneration`` is a string, as Argo
  writes it, and lags one tick. Then, per tick:

  - first Rollout ever (no ``stableRS``) or a template equal to the stable one again
    (Argo's "rollback to stable"): ``stableRS`` = ``currentPodHash``, ``currentStepIndex``
    = len(steps), Healthy, at once (no steps walked);
  - ``status.abort`` true: Degraded, ``RolloutAborted: Rollout aborted update to revision
    N``, ``currentStepIndex`` 0, ``stableRS`` unchanged; ``abort: false`` (retry) walks the
    steps again from 0; a new template clears the abort;
  - a broken image: stays at its step, Progressing; from ``t == 1 + deadline_after``
    Degraded with ``ProgressDeadlineExceeded``;
  - ``status.promoteFull`` true: jumps past the last step;
  - otherwise one step per tick: ``setWeight`` (and any other step: analysis,
    experiment, setCanaryScale ... which always succeed) advance; ``pause: {}`` stops
    with phase Paused, ``pauseConditions [{reason: CanaryPauseStep}]``,
    ``controllerPause`` true, until someone sets ``pauseConditions`` to null (promote),
    then the next tick clears ``controllerPause`` and moves on; ``pause: {duration: ...}``
    pauses the same way for one tick and then moves on by itself; ``spec.paused`` true
    holds it Paused ("manually paused"). After the last step: ``stableRS`` =
    ``currentPodHash``, Healthy, all replicas available.

There are no ReplicaSets, Pods, AnalysisRuns or Services behind any of this.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
ROLLOUT_REVISION_ANNOTATION = "rollout.argoproj.io/revision"
DAEMONSET_NODES = 3  # desiredNumberScheduled of every DaemonSet


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_hash(template: Any) -> str:
    """First 10 hex digits of sha256 of the canonical JSON of a pod template."""
    canonical = json.dumps(template or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def images(template: Any) -> list[str]:
    spec = (template or {}).get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return [str(c.get("image", "")) for c in containers if isinstance(c, dict)]


def set_condition(status: dict[str, Any], ctype: str, value: bool, reason: str, message: str) -> None:
    """Upsert a condition; keep its timestamps when nothing about it changed (no needless resourceVersion bump)."""
    conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
    text = "True" if value else "False"
    for cond in conditions:
        if cond.get("type") == ctype:
            if (cond.get("status"), cond.get("reason"), cond.get("message")) != (text, reason, message):
                if cond.get("status") != text:
                    cond["lastTransitionTime"] = now()
                cond.update(status=text, reason=reason, message=message, lastUpdateTime=now())
            return
    stamp = now()
    conditions.append(
        {
            "type": ctype,
            "status": text,
            "reason": reason,
            "message": message,
            "lastUpdateTime": stamp,
            "lastTransitionTime": stamp,
        }
    )


def drop_condition(status: dict[str, Any], ctype: str) -> None:
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != ctype]


@dataclass
class _State:
    """What a controller remembers about one object between ticks."""

    generation: int = 0
    ticks: int = 0  # since the last generation change
    total_ticks: int = 0
    template_hash: str = ""
    revision: int = 0
    ever_available: bool = False
    current_revision: str = ""  # StatefulSet
    steps_signature: str = ""  # Rollout
    pause_tick: int = 0  # Rollout: the tick a pause began


class Controllers:
    """Status writers for Deployment, StatefulSet, DaemonSet, CustomResourceDefinition and Rollout."""

    KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CustomResourceDefinition", "Rollout")

    def __init__(
        self, *, ready_after: int, deadline_after: int, crd_established_after: int, broken_images: Iterable[str]
    ):
        self.ready_after = ready_after
        self.deadline_after = deadline_after
        self.crd_established_after = crd_established_after
        self.broken_images = tuple(broken_images)
        self._state: dict[Any, _State] = {}

    def handles(self, obj: dict[str, Any]) -> bool:
        return obj.get("kind") in self.KINDS

    def forget(self, key: Any) -> None:
        self._state.pop(key, None)

    def broken(self, template: Any) -> bool:
        return any(bad in image for image in images(template) for bad in self.broken_images)

    def after_write(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Work the real controllers do on every write: a CRD with ``crd_established_after == 0`` is established at once."""
        if obj.get("kind") == "CustomResourceDefinition" and self.crd_established_after <= 0:
            return self.establish(obj)
        return obj

    def establish(self, crd: dict[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(crd)
        status = result.setdefault("status", {}) or {}
        result["status"] = status
        spec = result.get("spec") or {}
        status["acceptedNames"] = copy.deepcopy(spec.get("names") or {})
        status["storedVersions"] = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
        set_condition(status, "NamesAccepted", True, "NoConflicts", "no conflicts found")
        set_condition(status, "Established", True, "InitialNamesAccepted", "the initial names have been accepted")
        return result

    def tick(self, key: Any, obj: dict[str, Any]) -> dict[str, Any]:
        """One controller step for ``obj``; returns the new object (a copy; equal to ``obj`` when nothing changed)."""
        result = copy.deepcopy(obj)
        state = self._state.setdefault(key, _State())
        generation = int((result.get("metadata") or {}).get("generation") or 1)
        if state.generation != generation:
            state.generation, state.ticks = generation, 0
        state.ticks += 1
        state.total_ticks += 1
        if not isinstance(result.get("status"), dict):
            result["status"] = {}
        kind = result.get("kind")
        if kind == "CustomResourceDefinition":
            status = result["status"]
            set_condition(status, "NamesAccepted", True, "NoConflicts", "no conflicts found")
            if state.total_ticks >= self.crd_established_after:
                result = self.establish(result)
            return result
        if state.ticks < 2:  # the controller has not seen this generation yet
            return result
        if kind == "Deployment":
            self._deployment(result, state)
        elif kind == "StatefulSet":
            self._statefulset(result, state)
        elif kind == "DaemonSet":
            self._daemonset(result, state)
        elif kind == "Rollout":
            self._rollout(result, state)
        return result

    # -- helpers ---------------------------------------------------------------------------

    def _ready(self, state: _State) -> bool:
        return state.ticks >= max(2, 1 + self.ready_after)

    def _deadline_passed(self, state: _State) -> bool:
        return state.ticks >= 1 + self.deadline_after

    def _revision(self, obj: dict[str, Any], state: _State, annotation: str) -> str:
        """Count template changes in ``annotation``; returns the template's hash."""
        template_hash = pod_hash((obj.get("spec") or {}).get("template"))
        if template_hash != state.template_hash:
            state.template_hash = template_hash
            state.revision += 1
        annotations = obj["metadata"].setdefault("annotations", {})
        annotations[annotation] = str(state.revision)
        return template_hash

    # -- Deployment, StatefulSet, DaemonSet --------------------------------------------------

    def _deployment(self, obj: dict[str, Any], state: _State) -> None:
        spec, status = obj.get("spec") or {}, obj["status"]
        replicas = int(spec.get("replicas", 1))
        template_hash = self._revision(obj, state, REVISION_ANNOTATION)
        rs_name = f"{obj['metadata']['name']}-{template_hash}"
        status["observedGeneration"] = state.generation
        broken = self.broken(spec.get("template"))
        done = not broken and (replicas == 0 or self._ready(state))
        status["replicas"] = replicas
        status["updatedReplicas"] = replicas
        if done:
            state.ever_available = True
            status.update(readyReplicas=replicas, availableReplicas=replicas)
            status.pop("unavailableReplicas", None)
            set_condition(status, "Available", True, "MinimumReplicasAvailable", "Deployment has minimum availability.")
            set_condition(
                status,
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
            return
        status.update(readyReplicas=0, availableReplicas=0, unavailableReplicas=replicas)
        if state.ever_available:  # the old ReplicaSet still serves
            set_condition(status, "Available", True, "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            set_condition(
                status,
                "Available",
                False,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        if broken and self._deadline_passed(state):
            set_condition(
                status,
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            set_condition(status, "Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')

    def _statefulset(self, obj: dict[str, Any], state: _State) -> None:
        spec, status = obj.get("spec") or {}, obj["status"]
        replicas = int(spec.get("replicas", 1))
        template_hash = pod_hash(spec.get("template"))
        revision = f"{obj['metadata']['name']}-{template_hash}"
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("rollingUpdate") if strategy.get("type", "RollingUpdate") == "RollingUpdate" else None
        partition = int((rolling or {}).get("partition") or 0)
        first = not state.current_revision
        status.update(observedGeneration=state.generation, replicas=replicas, updateRevision=revision)
        status["currentRevision"] = state.current_revision or revision
        done = not self.broken(spec.get("template")) and (replicas == 0 or self._ready(state))
        if not done:
            status.update(readyReplicas=0, availableReplicas=0, updatedReplicas=0)
            status["currentReplicas"] = 0 if first else replicas
            return
        updated = replicas if first else max(0, replicas - partition)
        if first or updated == replicas:
            state.current_revision = revision
        status.update(
            readyReplicas=replicas,
            availableReplicas=replicas,
            updatedReplicas=updated,
            currentReplicas=replicas if state.current_revision == revision else replicas - updated,
            currentRevision=state.current_revision,
        )

    def _daemonset(self, obj: dict[str, Any], state: _State) -> None:
        spec, status = obj.get("spec") or {}, obj["status"]
        done = not self.broken(spec.get("template")) and self._ready(state)
        count = DAEMONSET_NODES if done else 0
        status.update(
            observedGeneration=state.generation,
            desiredNumberScheduled=DAEMONSET_NODES,
            currentNumberScheduled=DAEMONSET_NODES,
            numberMisscheduled=0,
            numberReady=count,
            updatedNumberScheduled=count,
            numberAvailable=count,
        )
        if done:
            status.pop("numberUnavailable", None)
        else:
            status["numberUnavailable"] = DAEMONSET_NODES

    # -- Rollout ------------------------------------------------------------------------------

    def _rollout(self, obj: dict[str, Any], state: _State) -> None:
        spec, status = obj.get("spec") or {}, obj["status"]
        name = obj["metadata"]["name"]
        status["observedGeneration"] = str(state.generation)  # a string, as Argo writes it
        replicas = int(spec.get("replicas", 1))
        strategy = spec.get("strategy") or {}
        canary = strategy.get("canary")
        if not isinstance(canary, dict):
            status["phase"] = "Degraded"
            status["message"] = "InvalidSpec: the fake API server supports only the canary strategy"
            set_condition(status, "InvalidSpec", True, "InvalidSpec", status["message"])
            return
        drop_condition(status, "InvalidSpec")
        steps: list[Any] = list(canary.get("steps") or [])
        template_hash = pod_hash(spec.get("template"))
        steps_signature = json.dumps(steps, sort_keys=True)
        if status.get("currentPodHash") != template_hash or state.steps_signature != steps_signature:
            # A new revision (or new steps): Argo's resetRolloutStatus.
            if status.get("currentPodHash") != template_hash:
                state.revision += 1
            state.steps_signature = steps_signature
            status["currentPodHash"] = template_hash
            status["currentStepIndex"] = 0
            for key in ("abort", "abortedAt", "pauseConditions", "controllerPause", "promoteFull"):
                status.pop(key, None)
        obj["metadata"].setdefault("annotations", {})[ROLLOUT_REVISION_ANNOTATION] = str(state.revision)
        rs_name = f"{name}-{template_hash}"
        status.setdefault("canary", {})
        status["selector"] = ",".join(
            f"{k}={v}" for k, v in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items())
        )

        stable = status.get("stableRS")
        if not stable or stable == template_hash:
            # First Rollout ever, or back to the stable template: no steps (Argo's fast path).
            status["stableRS"] = template_hash
            status["currentStepIndex"] = len(steps)
            for key in ("abort", "abortedAt", "pauseConditions", "controllerPause", "promoteFull"):
                status.pop(key, None)
            if self.broken(spec.get("template")):
                self._rollout_unavailable(status, state, replicas, rs_name)
            else:
                self._rollout_healthy(status, replicas, rs_name)
            return

        if status.get("abort"):
            status["currentStepIndex"] = 0
            status.pop("pauseConditions", None)
            status.pop("controllerPause", None)
            status.setdefault("abortedAt", now())
            message = f"Rollout aborted update to revision {state.revision}"
            status.update(phase="Degraded", message=f"RolloutAborted: {message}")
            status.update(replicas=replicas, updatedReplicas=0, readyReplicas=replicas, availableReplicas=replicas)
            set_condition(status, "Progressing", False, "RolloutAborted", message)
            drop_condition(status, "Paused")
            return
        status.pop("abortedAt", None)

        if self.broken(spec.get("template")):
            self._rollout_unavailable(status, state, replicas, rs_name)
            return

        index = int(status.get("currentStepIndex") or 0)
        if status.get("promoteFull"):
            index = len(steps)
            status.pop("pauseConditions", None)
            status.pop("controllerPause", None)
        elif spec.get("paused"):
            status.update(phase="Paused", message="manually paused")
            set_condition(status, "Paused", True, "RolloutPaused", "Rollout is paused")
            return
        elif index < len(steps):
            index = self._rollout_step(status, state, steps[index], index)
        status["currentStepIndex"] = index

        if index >= len(steps):
            status["currentStepIndex"] = len(steps)
            status["stableRS"] = template_hash
            status.pop("promoteFull", None)
            self._rollout_healthy(status, replicas, rs_name)
            return
        weight = 0
        for step in steps[:index]:
            if isinstance(step, dict) and "setWeight" in step:
                weight = int(step["setWeight"])
        canary_replicas = min(replicas, -(-replicas * weight // 100))
        status.update(
            replicas=replicas, updatedReplicas=canary_replicas, readyReplicas=replicas, availableReplicas=replicas
        )
        set_condition(status, "Available", True, "AvailableReason", "Rollout has minimum availability")
        set_condition(status, "Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        if status.get("pauseConditions"):
            status.update(phase="Paused", message="CanaryPauseStep")
            set_condition(status, "Paused", True, "RolloutPaused", "Rollout is paused")
        else:
            status.update(phase="Progressing", message="more replicas need to be updated")
            drop_condition(status, "Paused")

    def _rollout_step(self, status: dict[str, Any], state: _State, step: Any, index: int) -> int:
        """Process the current canary step; returns the new currentStepIndex."""
        pause = step.get("pause") if isinstance(step, dict) else None
        if not isinstance(step, dict) or "pause" not in step:
            return index + 1
        timed = isinstance(pause, dict) and pause.get("duration") not in (None, "")
        if status.get("pauseConditions"):
            if timed and state.total_ticks > state.pause_tick:  # the duration is over
                status.pop("pauseConditions", None)
                status.pop("controllerPause", None)
                return index + 1
            return index
        if status.get("controllerPause"):  # someone cleared the pause conditions: promoted
            status.pop("controllerPause", None)
            return index + 1
        status["pauseConditions"] = [{"reason": "CanaryPauseStep", "startTime": now()}]
        status["controllerPause"] = True
        state.pause_tick = state.total_ticks
        return index

    def _rollout_healthy(self, status: dict[str, Any], replicas: int, rs_name: str) -> None:
        status.update(
            phase="Healthy",
            replicas=replicas,
            updatedReplicas=replicas,
            readyReplicas=replicas,
            availableReplicas=replicas,
        )
        status.pop("message", None)
        set_condition(status, "Available", True, "AvailableReason", "Rollout has minimum availability")
        set_condition(
            status,
            "Progressing",
            True,
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
        )
        drop_condition(status, "Paused")

    def _rollout_unavailable(self, status: dict[str, Any], state: _State, replicas: int, rs_name: str) -> None:
        status.update(replicas=replicas, updatedReplicas=replicas, readyReplicas=0, availableReplicas=0)
        if self._deadline_passed(state):
            message = f'ReplicaSet "{rs_name}" has timed out progressing.'
            status.update(phase="Degraded", message=f"ProgressDeadlineExceeded: {message}")
            set_condition(status, "Progressing", False, "ProgressDeadlineExceeded", message)
        else:
            status.update(phase="Progressing", message="updated replicas are still becoming available")
            set_condition(status, "Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
