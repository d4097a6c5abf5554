"""The rollout step (Argo Rollouts canary) through its runner and the real client, against the fake API server.

The fake's Rollout controller walks one canary step per read and holds at each ``pause: {}``
until its pause condition is cleared, as Argo's does (see ``kubeapi/controller.py``).
"""

from __future__ import annotations

import pytest
from test_kubernetes_step import CONFIG, DEPLOYMENT, Service, applies, deploy, failure, in_activity, planned, rollout

from prodline.activities.steps.rollout import NOT_AT_PAUSE, RolloutRunner
from prodline.contracts import NON_RETRYABLE_CONFIG, UNHEALTHY, StepAction, StepProgress, StepRun

from kubeapi import FakeCluster


@pytest.fixture
def cluster():
    with FakeCluster(ready_after=1, deadline_after=4, preinstalled_crds=["rollouts.argoproj.io"]) as fake:
        yield fake


@pytest.fixture
def service(tmp_path, cluster) -> Service:
    service = Service(tmp_path, cluster.kubeconfig(tmp_path / "kubeconfig"))
    service.write(rollout(), CONFIG)
    return service


@pytest.fixture
def runner(service) -> RolloutRunner:
    return RolloutRunner(service.store)


def wait(runner: RolloutRunner, run: StepRun) -> StepProgress:
    return in_activity(runner.wait, run, run.step.spec)


def promote(runner: RolloutRunner, run: StepRun, at: StepProgress | None, full: bool = False) -> StepProgress:
    return in_activity(runner.promote, StepAction(run=run, at=at, full=full), run.step.spec)


def status_patches(cluster: FakeCluster) -> int:
    return cluster.count("PATCH", path_contains="/rollouts/web/status")


@pytest.fixture
def canary(service, runner) -> StepRun:
    """Version 2 applied over a stable version 1: its canary starts."""
    first = deploy(runner, service.step("rollout"))
    assert wait(runner, first).done  # the first Rollout goes straight to Healthy
    return deploy(runner, service.step("rollout", version="2.0.0"))


def test_the_canary_stops_at_each_pause_and_is_promoted_step_by_step(runner, cluster, canary):
    before = applies(cluster)
    first = wait(runner, canary)
    assert (first.paused, first.pause, first.step_index, first.steps) == (True, 1, 1, 5)
    assert first.pod_hash and not first.done
    moved = promote(runner, canary, first)
    assert not moved.paused
    second = wait(runner, canary)  # walks setWeight 50 and the analysis, stops at the next pause
    assert (second.paused, second.pause, second.step_index, second.pod_hash) == (True, 2, 4, first.pod_hash)
    promote(runner, canary, second)
    done = wait(runner, canary)
    assert done.done and not done.paused and "Healthy" in done.message and "fully promoted" in done.message
    live = cluster.get("argoproj.io/v1alpha1", "Rollout", "web")
    assert live is not None and live["status"]["stableRS"] == first.pod_hash
    assert applies(cluster) == before  # waits and promotes apply nothing


def test_a_promote_is_refused_unless_still_at_the_pause_it_was_for(runner, cluster, canary):
    at = wait(runner, canary)
    # Another pod hash (a newer template) or another step: never promoted past what was not seen.
    for wrong in (at.model_copy(update={"pod_hash": "0123456789"}), at.model_copy(update={"step_index": 3})):
        error = failure(runner.promote, StepAction(run=canary, at=wrong), canary.step.spec)
        assert error.type == NOT_AT_PAUSE and error.non_retryable and "nothing was done" in str(error)
    assert status_patches(cluster) == 0
    promote(runner, canary, at)
    # Now at setWeight 50, then an analysis: running steps. An operator's plain promote
    # (no expected pause) must not skip them, as the plugin's would.
    error = failure(runner.promote, StepAction(run=canary, at=None), canary.step.spec)
    assert error.type == NOT_AT_PAUSE and "would skip a running step" in str(error)
    assert status_patches(cluster) == 1
    assert wait(runner, canary).pause == 2  # the steps ran; it holds at the next pause


def test_promoting_twice_patches_once(runner, cluster, canary):
    """A retried promote (the first attempt patched and died) finds the canary past the pause."""
    at = wait(runner, canary)
    promote(runner, canary, at)
    again = in_activity(runner.promote, StepAction(run=canary, at=at), canary.step.spec, attempt=2)
    assert not again.paused and again.pod_hash == at.pod_hash
    assert status_patches(cluster) == 1


def test_a_conflict_is_read_again_and_checked_again(runner, cluster, canary):
    at = wait(runner, canary)
    cluster.fail_next("PATCH", "/rollouts/web/status", 409, "the object has been modified")
    assert not promote(runner, canary, at).paused
    assert status_patches(cluster) == 2
    assert wait(runner, canary).pause == 2


def test_without_a_status_subresource_the_patch_goes_to_the_rollout_itself(runner, cluster, canary):
    """As the plugin falls back (Argo Rollouts before v0.9 had no /status)."""
    at = wait(runner, canary)
    cluster.fail_next("PATCH", "/rollouts/web/status", 404, "the server could not find the requested resource")
    promote(runner, canary, at)
    patch = [r for r in cluster.requests if r.method == "PATCH" and r.path.endswith("/rollouts/web")][-1]
    assert "merge-patch" in patch.content_type and patch.body["status"] == {"pauseConditions": None}


def test_promote_full_skips_the_remaining_steps(runner, canary):
    promote(runner, canary, None, full=True)
    assert wait(runner, canary).done


def test_abort_goes_back_to_stable_and_the_wait_fails(runner, cluster, canary):
    wait(runner, canary)
    aborted = in_activity(runner.abort, StepAction(run=canary, reason="error rate"), canary.step.spec)
    assert "Degraded" in aborted.message and "RolloutAborted" in aborted.message
    again = in_activity(runner.abort, StepAction(run=canary), canary.step.spec)  # a no-op
    assert "RolloutAborted" in again.message and status_patches(cluster) == 1
    error = failure(runner.wait, canary, canary.step.spec)
    assert error.type == UNHEALTHY and error.non_retryable
    assert 'rollout "web" is Degraded: RolloutAborted: Rollout aborted update to revision 2' in str(error)


def test_the_other_workloads_are_waited_for_once_the_rollout_is_done(service, runner, cluster):
    service.write(rollout(), DEPLOYMENT.replace("name: web", "name: worker"))
    run = deploy(runner, service.step("rollout"))
    done = wait(runner, run)
    assert done.done and 'deployment "worker" successfully rolled out' in done.message


def test_the_rollout_driven_is_named_when_there_are_several(service, runner, cluster):
    service.write(rollout("web"), rollout("api"))
    unnamed = deploy(runner, service.step("rollout"))
    error = failure(runner.wait, unnamed, unnamed.step.spec)
    assert error.type == NON_RETRYABLE_CONFIG and "2 Rollouts (web, api)" in str(error)
    assert "rollout.rollout" in str(error)
    named = deploy(runner, service.step("rollout", rollout="api"))
    assert wait(runner, named).done
    wrong = service.step("rollout", rollout="nope").model_copy(update={"applied": named.applied})
    error = failure(runner.wait, wrong, wrong.step.spec)
    assert "rollout.rollout names 'nope'; Rollouts in the set: web, api" in str(error)


def abort(runner: RolloutRunner, run: StepRun) -> StepProgress:
    return in_activity(runner.abort, StepAction(run=run, reason="cancelled"), run.step.spec)


def test_an_abort_before_apply_reported_finds_the_rollout_from_the_approved_plan(runner, cluster, canary):
    """Cancelled or failed during apply: no apply result yet, but the canary may be under way."""
    assert wait(runner, canary).paused
    during_apply = canary.model_copy(update={"applied": None})
    aborted = abort(runner, during_apply)
    assert "RolloutAborted" in aborted.message and status_patches(cluster) == 1
    live = cluster.get("argoproj.io/v1alpha1", "Rollout", "web")
    assert live is not None and live["status"]["abort"] is True


def test_an_abort_before_the_rollout_exists_does_nothing(service, runner, cluster):
    planned_only = planned(runner, service.step("rollout"))
    assert abort(runner, planned_only).message == "no Rollout to abort"
    nothing = planned_only.model_copy(update={"plan": None})  # cancelled before even the plan
    assert abort(runner, nothing).message == "no Rollout to abort"
    assert status_patches(cluster) == 0 and cluster.get("argoproj.io/v1alpha1", "Rollout", "web") is None


def test_an_abort_of_a_fully_promoted_rollout_patches_nothing(service, runner, cluster):
    run = deploy(runner, service.step("rollout"))
    assert wait(runner, run).done
    again = abort(runner, run)
    assert "aborted" not in again.message and "fully promoted" in again.message
    assert status_patches(cluster) == 0
    assert wait(runner, run).done  # still Healthy: nothing to undo


def test_releasing_the_same_version_again_after_an_abort_starts_its_canary_again(service, runner, cluster, canary):
    """Argo clears an abort only when the template changes: the same version again is retried."""
    assert wait(runner, canary).pause == 1
    abort(runner, canary)
    again = deploy(runner, service.step("rollout", version="2.0.0"))
    assert again.applied is not None
    assert "the Rollout was aborted; retried, its canary starts again from step 1" in again.applied.output
    retry = [r for r in cluster.requests if r.method == "PATCH" and r.path.endswith("/rollouts/web/status")][-1]
    assert retry.body["status"] == {"abort": False} and retry.body["metadata"]["resourceVersion"]
    at = wait(runner, again)
    assert (at.paused, at.pause, at.step_index) == (True, 1, 1)
    # Applied again with nothing aborted: no retry.
    promote(runner, again, at)
    quiet = deploy(runner, service.step("rollout", version="2.0.0"))
    assert quiet.applied is not None and "retried" not in quiet.applied.output
