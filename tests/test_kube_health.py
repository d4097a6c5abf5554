"""Rollout health as `kubectl rollout status` judges it, and Argo Rollouts canaries as their plugin reads and drives them."""

from __future__ import annotations

from typing import Any

import pytest

from prodline.activities.kube.canary import (
    NotAtPause,
    abort_patch,
    canary_position,
    promote_patch,
    rollout_phase,
    rollout_progress,
    spec_unpause_patch,
    to_progress,
)
from prodline.activities.kube.health import Health, Unhealthy, progress, rollout_status
from prodline.contracts import StepProgress
from prodline.errors import WRONG_STATE


def deploy(generation: int = 2, observed: int = 2, spec_replicas: int | None = 3, **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {} if spec_replicas is None else {"replicas": spec_replicas}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "generation": generation,
            "annotations": {"deployment.kubernetes.io/revision": "4"},
        },
        "spec": spec,
        "status": {"observedGeneration": observed, **status},
    }


# --- Deployment ----------------------------------------------------------------------------------


def test_deployment_waits_for_its_spec_to_be_observed():
    assert rollout_status(deploy(generation=3, observed=2)) == Health(
        False, "Waiting for deployment spec update to be observed..."
    )


def test_deployment_wait_messages_in_kubectls_order():
    assert rollout_status(deploy(updatedReplicas=1, replicas=3, availableReplicas=1)).message == (
        'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...'
    )
    assert rollout_status(deploy(updatedReplicas=3, replicas=5, availableReplicas=3)).message == (
        'Waiting for deployment "web" rollout to finish: 2 old replicas are pending termination...'
    )
    waiting = rollout_status(deploy(updatedReplicas=3, replicas=3, availableReplicas=1))
    assert waiting == Health(
        False, 'Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas are available...'
    )
    assert rollout_status(deploy(updatedReplicas=3, replicas=3, availableReplicas=3)) == Health(
        True, 'deployment "web" successfully rolled out'
    )


def test_deployment_without_replicas_counts_the_api_default_of_one():
    assert rollout_status(deploy(spec_replicas=None)).message.endswith("0 out of 1 new replicas have been updated...")
    assert rollout_status(deploy(spec_replicas=None, updatedReplicas=1, replicas=1, availableReplicas=1)).done


def test_progress_deadline_is_terminal_with_the_controllers_message():
    cond = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "web-7d9" has timed out progressing.'}  # fmt: skip
    with pytest.raises(Unhealthy) as e:
        rollout_status(deploy(updatedReplicas=1, conditions=[cond]))
    assert (
        str(e.value)
        == 'deployment "web" exceeded its progress deadline: ReplicaSet "web-7d9" has timed out progressing.'
    )
    assert e.value.reason == "ProgressDeadlineExceeded"
    # Not yet observed: kubectl does not look at conditions of an older generation.
    assert not rollout_status(deploy(generation=3, observed=2, conditions=[cond])).done


def test_deployment_revision_must_match_when_asked():
    done = {"updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}
    assert rollout_status(deploy(**done), revision=4).done
    with pytest.raises(Unhealthy, match=r"^desired revision \(5\) is different from the running revision \(4\)$"):
        rollout_status(deploy(**done), revision=5)


# --- DaemonSet -----------------------------------------------------------------------------------


def daemon(
    strategy: str | None = "RollingUpdate", generation: int = 1, observed: int = 1, **status: Any
) -> dict[str, Any]:
    spec = {"updateStrategy": {"type": strategy}} if strategy else {}
    return {"kind": "DaemonSet", "metadata": {"name": "agent", "generation": generation}, "spec": spec,
            "status": {"observedGeneration": observed, **status}}  # fmt: skip


def test_daemon_set_rules():
    assert rollout_status(daemon(generation=2)).message == "Waiting for daemon set spec update to be observed..."
    assert rollout_status(daemon(updatedNumberScheduled=1, desiredNumberScheduled=3)).message == (
        'Waiting for daemon set "agent" rollout to finish: 1 out of 3 new pods have been updated...'
    )
    assert rollout_status(daemon(updatedNumberScheduled=3, desiredNumberScheduled=3, numberAvailable=2)).message == (
        'Waiting for daemon set "agent" rollout to finish: 2 of 3 updated pods are available...'
    )
    done = daemon(strategy=None, updatedNumberScheduled=3, desiredNumberScheduled=3, numberAvailable=3)
    assert rollout_status(done) == Health(True, 'daemon set "agent" successfully rolled out')
    with pytest.raises(Unhealthy, match=r"^rollout status is only available for RollingUpdate strategy type$"):
        rollout_status(daemon(strategy="OnDelete"))


# --- StatefulSet ---------------------------------------------------------------------------------


def sts(strategy: dict[str, Any] | None, replicas: int = 3, generation: int = 1, observed: int = 1, **status: Any):
    spec: dict[str, Any] = {"replicas": replicas}
    if strategy is not None:
        spec["updateStrategy"] = strategy
    return {"kind": "StatefulSet", "metadata": {"name": "db", "generation": generation}, "spec": spec,
            "status": {"observedGeneration": observed, **status}}  # fmt: skip


def test_stateful_set_waits_for_observation_and_ready_pods():
    assert rollout_status(sts(None, observed=0)).message == "Waiting for statefulset spec update to be observed..."
    assert rollout_status(sts(None, generation=2)).message == "Waiting for statefulset spec update to be observed..."
    assert rollout_status(sts(None, readyReplicas=1)) == Health(False, "Waiting for 2 pods to be ready...")
    with pytest.raises(Unhealthy, match="only available for RollingUpdate"):
        rollout_status(sts({"type": "OnDelete"}))


def test_stateful_set_partition_branch():
    partitioned = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
    assert rollout_status(sts(partitioned, readyReplicas=3, updatedReplicas=1)) == Health(
        False, "Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated..."
    )
    # Done with revisions still differing: the partition branch never compares them.
    done = sts(partitioned, readyReplicas=3, updatedReplicas=2, updateRevision="db-2", currentRevision="db-1")
    assert rollout_status(done) == Health(True, "partitioned roll out complete: 2 new pods have been updated...")


def test_omitted_strategy_is_defaulted_to_partition_zero_but_explicit_type_is_not():
    status = {"readyReplicas": 3, "updatedReplicas": 1, "updateRevision": "db-2", "currentRevision": "db-1"}
    # Omitted: SetDefaults gives rollingUpdate{partition: 0}, so 1 of 3 updated is still waiting.
    assert rollout_status(sts(None, **status)).message == (
        "Waiting for partitioned roll out to finish: 1 out of 3 new pods have been updated..."
    )
    # Explicit type without rollingUpdate: the revision-equality branch.
    explicit = {"type": "RollingUpdate"}
    assert rollout_status(sts(explicit, **status)) == Health(
        False, "waiting for statefulset rolling update to complete 1 pods at revision db-2..."
    )
    same = {**status, "currentRevision": "db-2", "currentReplicas": 3}
    assert rollout_status(sts(explicit, **same)) == Health(
        True, "statefulset rolling update complete 3 pods at revision db-2..."
    )


def test_other_kinds_are_done_at_once_and_progress_text():
    assert rollout_status({"kind": "ConfigMap", "metadata": {"name": "c"}}).done
    assert progress(deploy(spec_replicas=5, updatedReplicas=3, availableReplicas=2)) == ("3/5 updated, 2 available")
    assert progress(sts(None, updatedReplicas=1, readyReplicas=2)) == "1/3 updated, 2 ready"
    assert progress(daemon(updatedNumberScheduled=1, desiredNumberScheduled=4, numberAvailable=0)) == (
        "1/4 updated, 0 available"
    )
    assert progress({"kind": "Service"}) == ""


# --- Argo Rollouts -------------------------------------------------------------------------------

STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "30s"}}, {"pause": {}}]


def rollout(index: int | None = 1, *, generation: int = 3, observed: str = "3", pause: bool = True,
            pod_hash: str = "new", stable: str = "old", **status: Any) -> dict[str, Any]:  # fmt: skip
    st: dict[str, Any] = {"observedGeneration": observed, "currentPodHash": pod_hash, "stableRS": stable, **status}
    if index is not None:
        st["currentStepIndex"] = index
    if pause:
        st.setdefault("pauseConditions", [{"reason": "CanaryPauseStep", "startTime": "2024-01-01T00:00:00Z"}])
        st.setdefault("controllerPause", True)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "generation": generation, "resourceVersion": "77"},
        "spec": {"replicas": 4, "strategy": {"canary": {"steps": STEPS}}},
        "status": st,
    }


def test_phase_is_only_trusted_once_the_generation_is_observed():
    assert rollout_phase(rollout(observed="2", phase="Healthy")) == (
        "Progressing",
        "waiting for rollout spec update to be observed",
    )
    assert rollout_phase(rollout(observed="4", phase="Healthy"))[0] == "Healthy"  # larger: observed (v0.9 hash case)
    assert rollout_phase(rollout(observed="abc123", phase="Healthy"))[0] == "Healthy"  # non-numeric: observed


def test_unpausing_then_controller_phase_then_calculated():
    unpausing = rollout(pause=False, controllerPause=True, phase="Paused")
    assert rollout_phase(unpausing) == ("Progressing", "waiting for rollout to unpause")
    assert rollout_phase(rollout(phase="Paused", message="CanaryPauseStep")) == ("Paused", "CanaryPauseStep")
    assert rollout_phase(rollout()) == ("Paused", "CanaryPauseStep")  # no status.phase: calculated


def test_calculate_phase_order():
    aborted = rollout(conditions=[{"type": "Progressing", "reason": "RolloutAborted", "message": "aborted by x"}])
    assert rollout_phase(aborted) == ("Degraded", "RolloutAborted: aborted by x")  # before Paused
    invalid = rollout(conditions=[{"type": "InvalidSpec", "message": "bad steps"}])
    assert rollout_phase(invalid) == ("Degraded", "InvalidSpec: bad steps")
    manual = rollout(pause=False)
    manual["spec"]["paused"] = True
    assert rollout_phase(manual) == ("Paused", "manually paused")
    counts = {"pause": False, "replicas": 4, "availableReplicas": 4}
    assert rollout_phase(rollout(updatedReplicas=1, **counts)) == ("Progressing", "more replicas need to be updated")
    assert rollout_phase(rollout(updatedReplicas=4, **{**counts, "availableReplicas": 2})) == (
        "Progressing", "updated replicas are still becoming available")  # fmt: skip
    assert rollout_phase(rollout(updatedReplicas=4, **{**counts, "replicas": 5})) == (
        "Progressing", "old replicas are pending termination")  # fmt: skip
    assert rollout_phase(rollout(updatedReplicas=4, **counts)) == ("Progressing", "waiting for all steps to complete")
    assert rollout_phase(rollout(5, updatedReplicas=4, stable="new", **counts)) == ("Healthy", "")


def test_position_at_an_indefinite_pause():
    position = canary_position(rollout(1))
    assert position.pause_steps == (1, 4)  # the 30s pause is no gate
    assert (position.current_step_index, position.paused_at_pause, position.pod_hash) == (1, 1, "new")
    assert canary_position(rollout(4)).paused_at_pause == 2
    assert not canary_position(rollout(1)).fully_promoted and not canary_position(rollout(1)).aborted
    progress_ = to_progress(position, rollout_phase(rollout(1)))
    assert progress_ == StepProgress(
        done=False, paused=True, pause=1, step_index=1, steps=5, pod_hash="new", message=progress_.message
    )


@pytest.mark.parametrize(
    "ro",
    [
        rollout(3),  # a pause with a duration: it ends on its own
        rollout(1, pause=False),  # the controller has not paused it (yet)
        rollout(1, observed="2"),  # an older generation's pause
        rollout(1, pauseConditions=[{"reason": "InconclusiveAnalysisRun"}]),
        rollout(None),  # nil index is step 0, a setWeight
    ],
)
def test_not_held_at_a_pause(ro: dict[str, Any]):
    assert canary_position(ro).paused_at_pause == 0
    with pytest.raises(NotAtPause) as e:
        promote_patch(ro, None, full=False)
    assert "would skip a running step" in str(e.value) and e.value.exit_code == WRONG_STATE


def test_done_only_when_healthy_and_fully_promoted_and_aborted_is_terminal():
    healthy = rollout(5, pause=False, stable="new", phase="Healthy")
    assert rollout_progress(healthy).done
    assert not rollout_progress(rollout(5, pause=False, phase="Healthy")).done  # stable not yet the new hash
    assert not canary_position(rollout(0, pause=False, pod_hash="", stable="")).fully_promoted
    aborted = rollout(1, pause=False, abort=True, phase="Degraded", message="RolloutAborted: by prodline")
    assert canary_position(aborted).aborted
    with pytest.raises(Unhealthy) as e:
        rollout_progress(aborted)
    assert e.value.reason == "RolloutAborted" and "RolloutAborted: by prodline" in str(e.value)


def test_promote_patch_as_the_plugin_with_a_resource_version_precondition():
    expected = StepProgress(paused=True, pause=1, step_index=1, steps=5, pod_hash="new")
    assert promote_patch(rollout(1), expected, full=False) == {
        "metadata": {"resourceVersion": "77"},
        "status": {"pauseConditions": None},
    }
    assert promote_patch(rollout(1), None, full=False) == promote_patch(rollout(1), expected, full=False)
    assert promote_patch(rollout(1), expected, full=True) == {
        "metadata": {"resourceVersion": "77"},
        "status": {"promoteFull": True},
    }
    assert promote_patch(rollout(5, pause=False, stable="new"), None, full=True) is None  # already promoted


def test_promote_refused_when_the_rollout_moved_on():
    expected = StepProgress(paused=True, pause=1, step_index=1, steps=5, pod_hash="new")
    with pytest.raises(NotAtPause, match="expected step 1 of pod hash new, found step 4 of pod hash new"):
        promote_patch(rollout(4), expected, full=False)  # held at the next pause: promoting it would skip that one
    with pytest.raises(NotAtPause, match="found step 1 of pod hash newer"):
        promote_patch(rollout(1, pod_hash="newer"), expected, full=False)  # a new template started over


def test_promote_at_an_inconclusive_pause_lifts_the_controller_pause_and_moves_on():
    ro = rollout(1, canary={"currentStepAnalysisRunStatus": {"status": "Inconclusive"}})
    assert promote_patch(ro, None, full=False) == {
        "metadata": {"resourceVersion": "77"},
        "status": {"pauseConditions": None, "controllerPause": False, "currentStepIndex": 2},
    }


def test_unpause_and_abort_patches():
    paused = rollout(1)
    paused["spec"]["paused"] = True
    assert spec_unpause_patch(paused) == {"spec": {"paused": False}}
    assert spec_unpause_patch(rollout(1)) is None
    assert abort_patch(rollout(1)) == {"metadata": {"resourceVersion": "77"}, "status": {"abort": True}}
    unread = rollout(1)
    del unread["metadata"]["resourceVersion"]
    with pytest.raises(ValueError, match="resourceVersion"):
        abort_patch(unread)
