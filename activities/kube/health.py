"""Is a workload rolled out? ``kubectl rollout status``'s rules, message for message.

A port of kubectl ``pkg/polymorphichelpers/rollout_status.go`` (the
``DeploymentStatusViewer``, ``DaemonSetStatusViewer`` and ``StatefulSetStatusViewer``
``Status`` methods) over the plain dicts the DynamicClient returns. Each returns
``(message, done, error)`` in kubectl; here :class:`Health` is ``(done, message)``
and kubectl's error, which ends its watch, is :class:`Unhealthy`: terminal, not
worth a retry (a progress deadline, a strategy kubectl refuses to watch, another
revision running).

Missing fields read as Go's zero values, as kubectl's conversion to typed
objects does, with one exception: the defaults the API server applies on
create are applied here too (``replicas`` 1, ``updateStrategy`` RollingUpdate
with ``partition: 0`` for a StatefulSet whose type was empty, kubernetes
``pkg/apis/apps/v1/defaults.go``), so an object that did not go through
defaulting (a test's fake server) is judged as a real one would be. The
StatefulSet subtlety survives that: an explicit ``type: RollingUpdate`` with no
``rollingUpdate`` takes the revision-equality branch, an omitted strategy the
partition branch.

Messages are kubectl's without the trailing newline. The caller polls (a GET
per heartbeat, research §1) and treats any kind without rules as done at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# kubectl's deploymentutil.TimedOutReason and the condition it sits on.
PROGRESSING = "Progressing"
DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
WAITED_KINDS = frozenset({"Deployment", "DaemonSet", "StatefulSet"})


@dataclass(frozen=True)
class Health:
    """Where a workload stands: ``done`` once rolled out, with kubectl's message either way."""

    done: bool
    message: str


class Unhealthy(Exception):
    """A rollout that will not finish by waiting (kubectl's error): fail the step, do not retry.

    ``reason`` tells the cases apart: ``ProgressDeadlineExceeded``, ``UnsupportedStrategy``,
    ``RevisionMismatch``, ``RolloutAborted``/``Degraded`` (Argo Rollouts, from :mod:`.canary`).
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.message, self.reason = message, reason


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}  # pyright: ignore[reportUnknownVariableType]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _q(name: str) -> str:
    """Go's %q for a Kubernetes name (DNS labels: no escapes needed beyond quotes and backslashes)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parts(obj: Mapping[str, Any]) -> tuple[str, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]:
    metadata = _map(obj.get("metadata"))
    return str(metadata.get("name", "")), metadata, _map(obj.get("spec")), _map(obj.get("status"))


def _replicas(spec: Mapping[str, Any]) -> int:
    """spec.replicas, defaulted to 1 as the API server does (kubectl checks it is non-nil: always, once defaulted)."""
    value = spec.get("replicas")
    return _int(value) if value is not None else 1


def rollout_status(obj: Mapping[str, Any], revision: int = 0) -> Health:
    """kubectl's rollout status of ``obj``; raises :class:`Unhealthy` where kubectl errors."""
    kind = str(obj.get("kind", ""))
    if kind == "Deployment":
        return _deployment(obj, revision)
    if kind == "DaemonSet":
        return _daemon_set(obj)
    if kind == "StatefulSet":
        return _stateful_set(obj)
    name = _parts(obj)[0]
    return Health(True, f"{kind.lower()} {_q(name)} applied")  # nothing to wait for (kubectl has no viewer)


def _deployment(obj: Mapping[str, Any], revision: int) -> Health:
    name, metadata, spec, status = _parts(obj)
    if revision > 0:
        raw = _map(metadata.get("annotations")).get(REVISION_ANNOTATION)
        try:
            running = int(raw) if raw is not None else 0  # deploymentutil.Revision: a missing annotation is 0
        except (TypeError, ValueError) as e:
            raise Unhealthy(f"cannot get the revision of deployment {_q(name)}: {e}", "RevisionMismatch") from None
        if revision != running:
            raise Unhealthy(
                f"desired revision ({revision}) is different from the running revision ({running})", "RevisionMismatch"
            )
    if _int(metadata.get("generation")) <= _int(status.get("observedGeneration")):
        for cond in status.get("conditions") or []:
            cond = _map(cond)
            if cond.get("type") == PROGRESSING and cond.get("reason") == DEADLINE_EXCEEDED:
                detail = f": {cond['message']}" if cond.get("message") else ""
                raise Unhealthy(f"deployment {_q(name)} exceeded its progress deadline{detail}", DEADLINE_EXCEEDED)
        updated, replicas = _int(status.get("updatedReplicas")), _replicas(spec)
        if updated < replicas:
            return Health(
                False,
                f"Waiting for deployment {_q(name)} rollout to finish: "
                f"{updated} out of {replicas} new replicas have been updated...",
            )
        if _int(status.get("replicas")) > updated:
            return Health(
                False,
                f"Waiting for deployment {_q(name)} rollout to finish: "
                f"{_int(status.get('replicas')) - updated} old replicas are pending termination...",
            )
        available = _int(status.get("availableReplicas"))
        if available < updated:
            return Health(
                False,
                f"Waiting for deployment {_q(name)} rollout to finish: "
                f"{available} of {updated} updated replicas are available...",
            )
        return Health(True, f"deployment {_q(name)} successfully rolled out")
    return Health(False, "Waiting for deployment spec update to be observed...")


def _unsupported() -> Unhealthy:
    # kubectl returns done=true with this error: it will not watch an OnDelete rollout.
    return Unhealthy("rollout status is only available for RollingUpdate strategy type", "UnsupportedStrategy")


def _daemon_set(obj: Mapping[str, Any]) -> Health:
    name, metadata, spec, status = _parts(obj)  # revision is ignored: DaemonSets keep no history here
    strategy = _map(spec.get("updateStrategy")).get("type") or "RollingUpdate"  # the API default
    if strategy != "RollingUpdate":
        raise _unsupported()
    if _int(metadata.get("generation")) <= _int(status.get("observedGeneration")):
        updated, desired = _int(status.get("updatedNumberScheduled")), _int(status.get("desiredNumberScheduled"))
        if updated < desired:
            return Health(
                False,
                f"Waiting for daemon set {_q(name)} rollout to finish: "
                f"{updated} out of {desired} new pods have been updated...",
            )
        available = _int(status.get("numberAvailable"))
        if available < desired:
            return Health(
                False,
                f"Waiting for daemon set {_q(name)} rollout to finish: "
                f"{available} of {desired} updated pods are available...",
            )
        return Health(True, f"daemon set {_q(name)} successfully rolled out")
    return Health(False, "Waiting for daemon set spec update to be observed...")


def _stateful_set(obj: Mapping[str, Any]) -> Health:
    _, metadata, spec, status = _parts(obj)
    strategy = _map(spec.get("updateStrategy"))
    kind = strategy.get("type") or ""
    rolling_update = strategy.get("rollingUpdate")
    if not kind:  # SetDefaults_StatefulSet: only an empty type gets rollingUpdate{partition: 0}
        kind, rolling_update = "RollingUpdate", rolling_update if rolling_update is not None else {"partition": 0}
    if kind != "RollingUpdate":
        raise _unsupported()
    observed = _int(status.get("observedGeneration"))
    if observed == 0 or _int(metadata.get("generation")) > observed:
        return Health(False, "Waiting for statefulset spec update to be observed...")
    replicas, ready = _replicas(spec), _int(status.get("readyReplicas"))
    if ready < replicas:
        return Health(False, f"Waiting for {replicas - ready} pods to be ready...")
    updated = _int(status.get("updatedReplicas"))
    if rolling_update is not None:
        partition = _map(rolling_update).get("partition")
        if partition is not None and updated < replicas - _int(partition):
            return Health(
                False,
                f"Waiting for partitioned roll out to finish: "
                f"{updated} out of {replicas - _int(partition)} new pods have been updated...",
            )
        return Health(True, f"partitioned roll out complete: {updated} new pods have been updated...")
    update_revision = str(status.get("updateRevision") or "")
    if update_revision != str(status.get("currentRevision") or ""):
        return Health(
            False, f"waiting for statefulset rolling update to complete {updated} pods at revision {update_revision}..."
        )
    return Health(
        True,
        f"statefulset rolling update complete {_int(status.get('currentReplicas'))} pods "
        f"at revision {status.get('currentRevision') or ''}...",
    )


def progress(obj: Mapping[str, Any]) -> str:
    """A short heartbeat text: ``3/5 updated, 2 available`` (empty for kinds without replicas)."""
    kind = str(obj.get("kind", ""))
    _, _, spec, status = _parts(obj)
    if kind in ("Deployment", "Rollout"):
        return (f"{_int(status.get('updatedReplicas'))}/{_replicas(spec)} updated, "
                f"{_int(status.get('availableReplicas'))} available")  # fmt: skip
    if kind == "StatefulSet":
        return f"{_int(status.get('updatedReplicas'))}/{_replicas(spec)} updated, {_int(status.get('readyReplicas'))} ready"
    if kind == "DaemonSet":
        desired = _int(status.get("desiredNumberScheduled"))
        return (f"{_int(status.get('updatedNumberScheduled'))}/{desired} updated, "
                f"{_int(status.get('numberAvailable'))} available")  # fmt: skip
    return ""
