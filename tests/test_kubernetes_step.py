"""The kubernetes step through its runner and the real ``kubernetes`` client, against a fake API server over HTTP.

Each runner method runs as an activity attempt (``ActivityEnvironment``), so heartbeats and
the attempt number are real; plans and applied objects go to a local artifact store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import textwrap
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from prodline.activities.kube.manifests import PART_OF_LABEL
from prodline.activities.kube.prune import ApplySet
from prodline.activities.steps.kubernetes import KubernetesRunner
from prodline.artifacts.store import LocalArtifactStore, sha256
from prodline.config.steps import Step
from prodline.contracts import NON_RETRYABLE_CONFIG, STALE_PLAN, UNHEALTHY, ReleaseRef, RunContext, StepResult, StepRun

from kubeapi import FakeCluster
from kubeapi.resources import ROLLOUT_CRD

T = TypeVar("T")

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: "shop/web:{{ version }}"
"""

CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  VERSION: "{{ version }}"
  GREETING: hello
"""

PASSWORD = "hunter2-not-for-plans"
SECRET = f"""
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
stringData:
  password: {PASSWORD}
"""


# --- shared with test_rollout_step.py ---------------------------------------------------------


class Service:
    """A service folder with manifests and a step over them, against the cluster ``kubeconfig`` names."""

    def __init__(self, root: Path, kubeconfig: Path):
        self.folder = root / "service"
        (self.folder / "k8s").mkdir(parents=True, exist_ok=True)
        self.kubeconfig = kubeconfig
        self.store = LocalArtifactStore(root / "artifacts")

    def write(self, *documents: str, name: str = "app.yaml") -> None:
        text = "\n---\n".join(textwrap.dedent(d).strip() for d in documents)
        (self.folder / "k8s" / name).write_text(text + "\n")

    def step(self, kind: str = "kubernetes", version: str = "1.0.0", params: dict[str, str] | None = None,
             **spec: Any) -> StepRun:  # fmt: skip
        config = {"manifests": ["k8s"], "kubeconfig": str(self.kubeconfig), "poll_interval": "10ms", **spec}
        step = Step.model_validate({"name": "deploy", kind: config})
        context = RunContext(**ReleaseRef.of("shop", "checkout", version), environment="staging",
                             base_dir=str(self.folder), run_id="run-1", parameters=params or {})  # fmt: skip
        return StepRun(context=context, step=step)


def in_activity(
    method: Callable[..., Coroutine[Any, Any, T]], *args: Any, attempt: int = 1, beats: list[Any] | None = None
) -> T:
    """Run a runner's method as one attempt of an activity; its heartbeats go to ``beats``."""
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, attempt=attempt)
    if beats is not None:
        environment.on_heartbeat = lambda *details: beats.extend(details)
    return asyncio.run(environment.run(method, *args))


def planned(runner: KubernetesRunner, run: StepRun) -> StepRun:
    """``run`` with its plan made (as approved)."""
    return run.model_copy(update={"plan": in_activity(runner.plan, run, run.step.spec)})


def applied(runner: KubernetesRunner, run: StepRun, attempt: int = 1) -> StepRun:
    """``run`` after its approved plan was applied: ready to wait."""
    result = in_activity(runner.apply, run, run.step.spec, attempt=attempt)
    return run.model_copy(update={"applied": result})


def deploy(runner: KubernetesRunner, run: StepRun) -> StepRun:
    return applied(runner, planned(runner, run))


def applies(cluster: FakeCluster) -> int:
    """Server-side applies that were not dry-runs."""
    return cluster.count("PATCH", content_type="apply-patch", dry_run=False)


def failure(method: Callable[..., Coroutine[Any, Any, Any]], *args: Any, attempt: int = 1) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        in_activity(method, *args, attempt=attempt)
    return caught.value


# ----------------------------------------------------------------------------------------------


@pytest.fixture
def cluster():
    with FakeCluster(ready_after=2, deadline_after=4) as fake:
        yield fake


@pytest.fixture
def service(tmp_path, cluster) -> Service:
    return Service(tmp_path, cluster.kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def runner(service) -> KubernetesRunner:
    return KubernetesRunner(service.store)


def test_apply_then_healthy(service, runner, cluster):
    service.write(CONFIG, SECRET, DEPLOYMENT)
    run = planned(runner, service.step())
    assert run.plan is not None
    assert run.plan.summary == "3 to create, 0 to update, 0 to prune, 0 unchanged"
    assert run.plan.changed is True and run.plan.artifact and run.plan.digest

    result = in_activity(runner.apply, run, run.step.spec)
    assert result.summary == "applied 3 objects (3 created, 0 updated)"
    # What was applied is kept for a later re-apply: exactly the approved objects, by their digest.
    stored = service.store.get(result.applied_key or "")
    assert json.loads(stored) == {"objects": json.loads(service.store.get(run.plan.artifact))["objects"], "prune": []}
    assert result.applied_digest == sha256(stored)
    live = cluster.get("apps/v1", "Deployment", "web")
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web:1.0.0"
    assert {m["manager"] for m in live["metadata"]["managedFields"]} == {"prodline"}
    # Config before workloads (Helm's order), as applied.
    order = [r.path.rsplit("/", 1)[1] for r in cluster.requests if r.method == "PATCH" and not r.dry_run]
    assert order == ["web-secret", "web-config", "web"]

    wait_beats: list[Any] = []
    progress = in_activity(runner.wait, run.model_copy(update={"applied": result}), run.step.spec, beats=wait_beats)
    assert progress.done and progress.message == 'deployment "web" successfully rolled out'
    # Heartbeats said where it stood while it waited.
    assert any("0 of 2 updated replicas are available" in b.get("message", "") for b in wait_beats), wait_beats


def test_a_broken_image_fails_with_the_progress_deadline(service, runner, cluster):
    service.write(DEPLOYMENT)
    run = deploy(runner, service.step(images={"web": "shop/web:bad-{{ version }}"}))
    error = failure(runner.wait, run, run.step.spec)
    assert error.type == UNHEALTHY and error.non_retryable
    assert 'deployment "web" exceeded its progress deadline' in str(error)
    assert "ProgressDeadlineExceeded" in str(error)
    assert str(error).endswith("images: web=shop/web:bad-1.0.0")  # what it was rolling out


def test_the_plan_lists_changed_fields_and_masks_secrets(service, runner, cluster):
    service.write(CONFIG, SECRET, DEPLOYMENT)
    deploy(runner, service.step())
    service.write(CONFIG.replace("hello", "hi"), SECRET.replace(PASSWORD, "s3cret-rotated-value"), DEPLOYMENT)
    plan = planned(runner, service.step(version="1.1.0")).plan
    assert plan is not None
    assert plan.summary == "0 to create, 3 to update, 0 to prune, 0 unchanged"
    assert '    data.GREETING: "hello" -> "hi"' in plan.output
    assert '    data.VERSION: "1.0.0" -> "1.1.0"' in plan.output
    assert '    spec.template.spec.containers[0].image: "shop/web:1.0.0" -> "shop/web:1.1.0"' in plan.output
    assert '    stringData.password: "*** (before)" -> "*** (after)"' in plan.output
    for secret in (PASSWORD, "s3cret-rotated-value"):
        assert secret not in plan.output and secret not in plan.summary
    # Approvers see the digest of these masked diffs; the saved plan (the objects apply sends, in
    # the artifact store, checked by its SHA-256) holds the same digest, which apply compares.
    saved = json.loads(service.store.get(plan.artifact or ""))
    assert plan.output.endswith(f"\ndiff digest {saved['diff_digest']}")
    assert sha256(service.store.get(plan.artifact or "")) == plan.digest


def test_a_plan_changed_between_approval_and_apply_is_stale(service, runner, cluster):
    service.write(CONFIG, DEPLOYMENT)
    deploy(runner, service.step())
    run = planned(runner, service.step(version="1.1.0"))
    before = applies(cluster)
    cluster.edit("apps/v1", "Deployment", "web", "default", lambda d: d["spec"].update(replicas=7))
    error = failure(runner.apply, run, run.step.spec)
    assert error.type == STALE_PLAN and error.non_retryable
    assert "apps/v1 Deployment default/web" in str(error) and "ConfigMap" not in str(error)
    assert applies(cluster) == before  # nothing applied


def test_a_retry_after_an_attempt_that_applied_converges(service, runner, cluster):
    """The worker died after applying, before reporting: the retry finds every object at its
    approved result and succeeds; a first attempt finding the same is a change since approval."""
    service.write(CONFIG, DEPLOYMENT)
    run = planned(runner, service.step())
    first = in_activity(runner.apply, run, run.step.spec)
    again = in_activity(runner.apply, run, run.step.spec, attempt=2)
    assert again.applied_digest == first.applied_digest
    assert failure(runner.apply, run, run.step.spec).type == STALE_PLAN


def test_per_environment_overrides_land_in_the_applied_objects(service, runner, cluster):
    service.write(CONFIG, DEPLOYMENT)
    run = service.step(
        params={"size": "5"},
        images={"web": "registry.test/web:{{ version }}-{{ environment }}"},
        replicas="{{ params.size }}",
        patches=[
            {"kind": "ConfigMap", "name": "web-config", "path": "data.GREETING", "value": "hi {{ environment }}"},
            {
                "kind": "Deployment",
                "path": "spec.template.spec.containers[0].args",
                "value": ["--env", "{{ environment }}"],
            },
            {"kind": "Deployment", "path": "spec.minReadySeconds", "value": 3},
        ],
    )
    deploy(runner, run)
    web = cluster.get("apps/v1", "Deployment", "web")
    config = cluster.get("v1", "ConfigMap", "web-config")
    assert web is not None and config is not None
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.test/web:1.0.0-staging"
    assert container["args"] == ["--env", "staging"]
    assert web["spec"]["replicas"] == 5 and web["spec"]["minReadySeconds"] == 3
    assert config["data"]["GREETING"] == "hi staging"


# A canary: two pauses, with running steps (a weight, an analysis) before the second.
CANARY = """
  strategy:
    canary:
      steps:
        - setWeight: 25
        - pause: {}
        - setWeight: 50
        - analysis: {templates: [{templateName: success-rate}]}
        - pause: {}
"""


def rollout(name: str = "web") -> str:
    """An Argo Rollout of the same pod template as DEPLOYMENT's, named ``name``, with CANARY's steps."""
    workload = DEPLOYMENT.replace("apps/v1", "argoproj.io/v1alpha1").replace("kind: Deployment", "kind: Rollout")
    return workload.replace("web", name).rstrip() + CANARY


def test_crds_first_then_discovery_refreshed_then_their_objects(service, runner, cluster):
    """A Rollout and its CRD in one set, in a namespace the set creates: none can be dry-run
    before the CRD and the namespace exist; apply installs them first, waits for the CRD to be
    Established, refreshes discovery and then applies the Rollout."""
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}"
    timed = rollout().replace("pause: {}", "pause: {duration: 1s}")  # a kubernetes step drives no pauses
    service.write(timed, CONFIG, yaml.safe_dump(ROLLOUT_CRD), namespace)
    run = planned(runner, service.step(namespace="shop"))
    assert run.plan is not None and run.plan.summary == "4 to create, 0 to update, 0 to prune, 0 unchanged"
    assert "+ argoproj.io/v1alpha1 Rollout shop/web" in run.plan.output
    applied(runner, run)
    assert cluster.get("argoproj.io/v1alpha1", "Rollout", "web", "shop") is not None
    writes = [(i, r.path) for i, r in enumerate(cluster.requests) if r.method == "PATCH" and not r.dry_run]
    assert [p.rsplit("/", 1)[1] for _, p in writes] == ["shop", "rollouts.argoproj.io", "web-config", "web"]
    crd_at, rollout_at = writes[1][0], writes[3][0]
    between = cluster.requests[crd_at:rollout_at]
    assert any(
        r.method == "GET" and r.path.endswith("/customresourcedefinitions/rollouts.argoproj.io") for r in between
    )
    assert any(r.path == "/apis/argoproj.io/v1alpha1" for r in between)  # discovery read anew


def test_prune_removes_only_labelled_leftovers_after_health(service, runner, cluster):
    extra = CONFIG.replace("web-config", "old-config")
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop-extra}"  # so Namespaces are a kind of the set
    service.write(namespace, CONFIG, extra, DEPLOYMENT)
    first = deploy(runner, service.step(prune=True))
    in_activity(runner.wait, first, first.step.spec)
    applyset = ApplySet.of(first.context, "deploy", "default").id
    old = cluster.get("v1", "ConfigMap", "old-config")
    assert old is not None and old["metadata"]["labels"][PART_OF_LABEL] == applyset
    labelled = {PART_OF_LABEL: applyset}
    cluster.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "by-hand"}, "data": {"a": "b"}})
    cluster.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stray", "labels": labelled}})
    cluster.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kept-ns", "labels": labelled}})

    service.write(namespace, CONFIG, DEPLOYMENT)  # old-config removed from the manifests
    run = planned(runner, service.step(prune=True))
    assert run.plan is not None
    assert "- v1 ConfigMap default/old-config" in run.plan.output and "- v1 ConfigMap default/stray" in run.plan.output
    assert "by-hand" not in run.plan.output and "kept-ns" not in run.plan.output
    run = applied(runner, run)
    assert cluster.get("v1", "ConfigMap", "old-config") is not None  # not before health
    progress = in_activity(runner.wait, run, run.step.spec)
    assert progress.done and progress.message.endswith("2 pruned")
    assert cluster.get("v1", "ConfigMap", "old-config") is None and cluster.get("v1", "ConfigMap", "stray") is None
    assert cluster.get("v1", "ConfigMap", "by-hand") is not None
    assert cluster.get("v1", "Namespace", "kept-ns", None) is not None
    parent = cluster.get("v1", "Secret", ApplySet.of(run.context, "deploy", "default").name)
    assert parent is not None
    assert (
        parent["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"]
        == "ConfigMap,Deployment.apps,Namespace"
    )


def test_a_step_that_does_not_wait_prunes_when_applied(service, runner, cluster):
    service.write(CONFIG, CONFIG.replace("web-config", "old-config"))
    deploy(runner, service.step(prune=True, wait=False))
    service.write(CONFIG)
    run = deploy(runner, service.step(prune=True, wait=False))
    assert run.applied is not None and run.applied.summary == "applied 1 object (0 created, 0 updated), 1 pruned"
    assert cluster.get("v1", "ConfigMap", "old-config") is None and cluster.get("v1", "ConfigMap", "web-config")


def test_client_errors_are_final_with_the_servers_message_and_server_errors_retry(service, runner, cluster):
    service.write(CONFIG, SECRET, DEPLOYMENT)
    run = service.step()
    cluster.fail_next(
        "PATCH", "/configmaps/web-config", 422, 'ConfigMap "web-config" is invalid: data.GREETING: Too long'
    )
    error = failure(runner.plan, run, run.step.spec)
    assert error.type == NON_RETRYABLE_CONFIG and error.non_retryable
    assert error.message == (
        'v1 ConfigMap default/web-config: ConfigMap "web-config" is invalid: data.GREETING: Too long '
        f"(HTTP 422 from {service.kubeconfig} (current context))"
    )
    # The server may echo a Secret's value: it never reaches the message.
    cluster.fail_next("PATCH", "/secrets/web-secret", 422, f'Secret "web-secret": invalid value "{PASSWORD}"')
    error = failure(runner.plan, run, run.step.spec)
    assert error.non_retryable and PASSWORD not in str(error) and "invalid value" in str(error)

    cluster.fail_next("PATCH", "/deployments/web", 500, "etcdserver: request timed out")
    error = failure(runner.plan, run, run.step.spec)
    assert not error.non_retryable and "etcdserver: request timed out" in str(error)
    cluster.fail_next("GET", "/deployments/web", 429, "too many requests")
    assert not failure(runner.plan, run, run.step.spec).non_retryable


def test_the_environments_kubeconfig_is_used_unless_the_step_names_one(service, runner, cluster, tmp_path):
    service.write(CONFIG)
    # The application file's `env: {KUBECONFIG: ...}` for this environment points at the cluster.
    step = service.step()
    config = step.step.kubernetes.model_copy(update={"kubeconfig": None})
    run = step.model_copy(
        update={
            "step": step.step.model_copy(update={"kubernetes": config}),
            "context": step.context.model_copy(update={"env": {"KUBECONFIG": str(service.kubeconfig)}}),
        }
    )
    assert in_activity(runner.plan, run, run.step.spec).changed
    # One that does not exist is named as the environment's, with its path.
    elsewhere = run.model_copy(update={"context": run.context.model_copy(update={"env": {"KUBECONFIG": "/nope/kc"}})})
    error = failure(runner.plan, elsewhere, elsewhere.step.spec)
    assert "kubeconfig /nope/kc (from the environment's env.KUBECONFIG in the application file)" in str(error)


def test_configuration_errors_name_the_field_and_the_fix(service, runner, cluster, tmp_path):
    service.write(CONFIG)
    missing = service.step(kubeconfig=str(tmp_path / "nope"))
    error = failure(runner.plan, missing, missing.step.spec)
    assert error.non_retryable and error.type == NON_RETRYABLE_CONFIG
    assert f"kubeconfig {tmp_path / 'nope'} (from kubernetes.kubeconfig) does not exist on the worker" in str(error)
    context = service.step(context="prod-east")
    error = failure(runner.plan, context, context.step.spec)
    assert error.non_retryable and "context 'prod-east'" in str(error) and "kubernetes.context" in str(error)

    service.write(CONFIG, rollout())  # no CRD for it anywhere
    run = service.step()
    error = failure(runner.plan, run, run.step.spec)
    assert error.non_retryable
    assert "argoproj.io/v1alpha1 Rollout web" in str(error) and "is its CRD installed?" in str(error)


def test_an_unreachable_cluster_is_retried(service, runner, cluster):
    service.write(CONFIG)
    run = service.step()
    cluster.stop()
    error = failure(runner.plan, run, run.step.spec)
    assert not error.non_retryable and error.type == "KubernetesUnavailable"


def test_waiting_applies_nothing(service, runner, cluster):
    """A worker that dies while waiting is replaced by one that waits again: no apply."""
    service.write(CONFIG, DEPLOYMENT)
    run = deploy(runner, service.step())
    before = applies(cluster)
    assert in_activity(runner.wait, run, run.step.spec, attempt=2).done
    assert in_activity(runner.wait, run, run.step.spec, attempt=3).done
    assert applies(cluster) == before


def test_a_cancelled_wait_stops_between_polls(service, runner):
    service.write(DEPLOYMENT)
    run = deploy(runner, service.step(poll_interval="30s"))
    environment = ActivityEnvironment()

    async def cancelled() -> None:
        waiting = asyncio.ensure_future(environment.run(runner.wait, run, run.step.spec))
        await asyncio.sleep(0.5)  # the first poll is done: it sleeps until the next
        environment.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, timeout=5)

    started = time.monotonic()
    asyncio.run(cancelled())
    assert time.monotonic() - started < 5


def test_what_apply_deployed_is_checked_before_waiting(service, runner, cluster):
    service.write(CONFIG, DEPLOYMENT)
    run = deploy(runner, service.step())
    assert run.applied is not None
    forged = run.model_copy(
        update={"applied": StepResult(applied_key=run.applied.applied_key, applied_digest="0" * 64)}
    )
    error = failure(runner.wait, forged, forged.step.spec)
    assert error.non_retryable and "checksum mismatch" in str(error)


def test_fetch_tells_drift(service, runner, cluster):
    service.write(CONFIG, DEPLOYMENT)
    run = deploy(runner, service.step())
    same = in_activity(runner.fetch, run, run.step.spec)
    assert same.changed is False and same.summary == "in sync"
    cluster.edit("apps/v1", "Deployment", "web", "default", lambda d: d["spec"].update(replicas=9))
    drift = in_activity(runner.fetch, run, run.step.spec)
    assert drift.changed is True and "    spec.replicas: 9 -> 2" in drift.output


DB_PASSWORD = "db-pw-5f0c9e2a71b4"


def with_sensitive_output(service: Service, run: StepRun, name: str, value: str) -> StepRun:
    """``run`` after an earlier step ``infra`` stored a sensitive output ``name`` (the store, not history)."""
    key = f"{run.context.release_id}/run-1/staging/infra/outputs.json"
    digest = service.store.put(key, json.dumps({name: value}).encode())
    context = run.context.model_copy(
        update={"sensitive_outputs": {f"steps.infra.outputs.{name}": key}, "output_digests": {key: digest}}
    )
    return run.model_copy(update={"context": context})


def test_an_earlier_steps_sensitive_output_never_reaches_plan_apply_fetch_or_errors(service, runner, cluster):
    service.write(CONFIG.replace("GREETING: hello", 'DB: "{{ steps.infra.outputs.db_password }}"'))
    run = with_sensitive_output(service, service.step(), "db_password", DB_PASSWORD)
    cluster.fail_next("PATCH", "/configmaps/web-config", 422, f'ConfigMap "web-config": invalid value "{DB_PASSWORD}"')
    error = failure(runner.plan, run, run.step.spec)
    assert "invalid value" in error.message and DB_PASSWORD not in error.message

    run = planned(runner, run)
    assert run.plan is not None
    assert '    data.DB: "***"' in run.plan.output
    assert DB_PASSWORD not in run.plan.output and DB_PASSWORD not in run.plan.summary
    cluster.fail_next("PATCH", "/configmaps/web-config", 500, f"etcd wrote {DB_PASSWORD} nowhere")
    error = failure(runner.apply, run, run.step.spec)
    assert not error.non_retryable and "etcd wrote" in error.message and DB_PASSWORD not in error.message
    run = applied(runner, run)
    assert run.applied is not None
    live = cluster.get("v1", "ConfigMap", "web-config")
    assert live is not None and live["data"]["DB"] == DB_PASSWORD  # the cluster gets it, history does not
    assert DB_PASSWORD not in run.applied.output + run.applied.summary

    cluster.edit("v1", "ConfigMap", "web-config", "default", lambda c: c["data"].update(DB="changed"))
    drift = in_activity(runner.fetch, run, run.step.spec)
    assert drift.changed and '    data.DB: "changed" -> "***"' in drift.output and DB_PASSWORD not in drift.output


def in_environment(run: StepRun, environment: str) -> StepRun:
    return run.model_copy(update={"context": run.context.model_copy(update={"environment": environment})})


def test_two_environments_in_one_namespace_prune_only_their_own(service, runner, cluster):
    """staging and production of one service share a cluster and namespace: each has its own set."""
    staging, production = CONFIG.replace("web-config", "staging-config"), CONFIG.replace("web-config", "prod-config")
    service.write(staging, CONFIG.replace("web-config", "staging-old"))
    deploy(runner, in_environment(service.step(prune=True, wait=False), "staging"))
    service.write(production, CONFIG.replace("web-config", "prod-old"))
    deploy(runner, in_environment(service.step(prune=True, wait=False), "production"))

    service.write(staging)  # staging-old removed from staging's manifests
    run = planned(runner, in_environment(service.step(prune=True, wait=False), "staging"))
    assert run.plan is not None and run.plan.summary == "0 to create, 0 to update, 1 to prune, 1 unchanged"
    applied(runner, run)
    assert cluster.get("v1", "ConfigMap", "staging-old") is None
    for kept in ("staging-config", "prod-config", "prod-old"):
        assert cluster.get("v1", "ConfigMap", kept) is not None, kept


def test_applyset_names_of_different_steps_never_collide():
    context = RunContext(**ReleaseRef.of("shop", "shop", "1.0.0"), environment="staging", base_dir=".", run_id="r")
    other = context.model_copy(update={"service": "shop-web"})
    a, b = ApplySet.of(context, "web-deploy", "default"), ApplySet.of(other, "deploy", "default")
    assert a.name != b.name and a.id != b.id
    assert a.name.startswith("prodline-shop-staging-web-deploy-")
    # Another application or environment with the same service and step: another set.
    assert ApplySet.of(context.model_copy(update={"application": "mall"}), "web-deploy", "default").id != a.id
    assert ApplySet.of(context.model_copy(update={"environment": "prod"}), "web-deploy", "default").id != a.id
    long = ApplySet.of(context.model_copy(update={"service": "s" * 300}), "deploy", "default")
    assert len(long.name) <= 253 and long.name.startswith("prodline-sss") and long.name[-11] == "-"


def delete_over_http(cluster: FakeCluster, path: str) -> None:
    """Someone else deletes an object (through the API, as kubectl would)."""
    urllib.request.urlopen(urllib.request.Request(cluster.url + path, method="DELETE"), timeout=5).close()


def test_only_the_approved_leftovers_are_pruned_and_only_if_still_the_same_object(service, runner, cluster):
    """The plan listed old-config and old-secret for pruning; by the time the wait prunes, another
    member was labelled (never approved) and old-secret was deleted and made anew (another object)."""
    old_secret = SECRET.replace("web-secret", "old-secret")
    service.write(CONFIG, CONFIG.replace("web-config", "old-config"), old_secret, DEPLOYMENT)
    first = deploy(runner, service.step(prune=True))
    in_activity(runner.wait, first, first.step.spec)
    service.write(CONFIG, DEPLOYMENT)
    run = planned(runner, service.step(prune=True))
    assert run.plan is not None and "1 to prune" not in run.plan.summary and "2 to prune" in run.plan.summary
    run = applied(runner, run)

    labelled = {PART_OF_LABEL: ApplySet.of(run.context, "deploy", "default").id}
    cluster.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "labels": labelled}})
    replaced = cluster.get("v1", "Secret", "old-secret")
    assert replaced is not None
    delete_over_http(cluster, "/api/v1/namespaces/default/secrets/old-secret")
    cluster.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "old-secret", "labels": labelled}})
    again = cluster.get("v1", "Secret", "old-secret")
    assert again is not None and again["metadata"]["uid"] != replaced["metadata"]["uid"]

    progress = in_activity(runner.wait, run, run.step.spec)
    assert cluster.get("v1", "ConfigMap", "old-config") is None  # approved, and still the same object
    assert cluster.get("v1", "ConfigMap", "late") is not None  # never approved
    assert cluster.get("v1", "Secret", "old-secret") is not None  # not the object approved
    assert progress.message.endswith(
        "; 1 pruned; not pruned: v1 Secret default/old-secret (replaced since the plan: another object of that name)"
    )
    deletes = [r for r in cluster.requests if r.method == "DELETE"]
    assert deletes[-1].path.endswith("/configmaps/old-config") and deletes[-1].body["preconditions"]["uid"]


def test_a_rollout_with_pauses_is_refused_in_a_kubernetes_step(tmp_path):
    """A kubernetes step would call it deployed while the canary sits at its first pause."""
    with FakeCluster(preinstalled_crds=["rollouts.argoproj.io"]) as fake:
        service = Service(tmp_path, fake.kubeconfig(tmp_path / "kubeconfig"))
        runner = KubernetesRunner(service.store)
        service.write(CONFIG, rollout())
        run = service.step()
        error = failure(runner.plan, run, run.step.spec)
        assert error.type == NON_RETRYABLE_CONFIG and error.non_retryable
        assert "argoproj.io/v1alpha1 Rollout default/web" in error.message
        assert "use a `rollout` step, whose pauses prodline drives" in error.message
        assert fake.count("PATCH") == 0  # refused before any dry-run
        # Timed pauses (or none) end on their own: a kubernetes step may apply it.
        service.write(CONFIG, rollout().replace("pause: {}", "pause: {duration: 10s}"))
        assert in_activity(runner.plan, run, run.step.spec).changed


SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80}]
"""


def test_a_retry_after_an_attempt_that_created_a_service_converges(service, runner, cluster):
    """The server allocates a new Service's clusterIP and nodePorts on every create, a dry-run's
    too: what the earlier attempt created never has the plan's values there."""
    service.write(CONFIG, SERVICE)
    run = planned(runner, service.step())
    in_activity(runner.apply, run, run.step.spec)

    def allocated(svc: dict[str, Any]) -> None:  # as the real server did when it created it
        # (Not ports[].nodePort: the fake replaces a list an apply sends whole, the real server merges it.)
        svc["spec"].update(clusterIP="10.96.0.12", clusterIPs=["10.96.0.12"], healthCheckNodePort=31001)

    cluster.edit("v1", "Service", "web", "default", allocated)
    again = in_activity(runner.apply, run, run.step.spec, attempt=2)
    assert again.summary == "applied 2 objects (0 created, 0 updated)"


def test_a_long_sensitive_output_is_masked_before_the_plan_cuts_it(service, runner, cluster):
    token = "tok-" + "z9" * 60  # longer than the plan shows of a value
    service.write(CONFIG.replace("GREETING: hello", 'TOKEN: "{{ steps.infra.outputs.token }}"'))
    run = planned(runner, with_sensitive_output(service, service.step(), "token", token))
    assert run.plan is not None and '    data.TOKEN: "***"' in run.plan.output and "z9z9" not in run.plan.output
