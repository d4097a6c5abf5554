"""The fake Kubernetes API server (tests/kubeapi), exercised through the REAL kubernetes client over HTTP.

Each test drives it the way the Kubernetes and Rollout runners will: DynamicClient
discovery, server-side apply, dry runs, status reads that tick the controllers, and the
merge patches of ``kubectl argo rollouts promote/abort``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient, AppsV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from kubeapi import FakeCluster
from kubeapi.resources import ROLLOUT_CRD

MANAGER = "prodline"


def deployment(name: str = "web", image: str = "nginx:1.27", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
            **spec,
        },
    }


def rollout(image: str = "app:1", steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    if steps is None:
        steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "10s"}}]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [{"name": "shop", "image": image}]},
            },
            "strategy": {"canary": {"steps": steps}},
        },
    }


class Kube:
    """A cluster and the real client pointed at it."""

    def __init__(self, cluster: FakeCluster, tmp_path: Path):
        self.cluster = cluster
        self.tmp_path = tmp_path
        self.api: ApiClient = kubernetes.config.new_client_from_config(
            config_file=str(cluster.kubeconfig(tmp_path / "kubeconfig"))
        )
        self.dyn = self.new_dynamic()

    def new_dynamic(self) -> DynamicClient:
        return DynamicClient(self.api, cache_file=str(self.tmp_path / "discovery.json"))

    def res(self, api_version: str, kind: str) -> Any:
        return self.dyn.resources.get(api_version=api_version, kind=kind)

    def apply(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        resource = self.res(body["apiVersion"], body["kind"])
        return resource.server_side_apply(
            body=body,
            namespace=body["metadata"].get("namespace"),
            field_manager=MANAGER,
            force_conflicts=True,
            **kwargs,
        ).to_dict()

    def read(self, body: dict[str, Any]) -> dict[str, Any]:
        resource = self.res(body["apiVersion"], body["kind"])
        return resource.get(name=body["metadata"]["name"], namespace=body["metadata"].get("namespace")).to_dict()

    def status_patch(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        resource = self.res(body["apiVersion"], body["kind"])
        return resource.status.patch(
            body={"status": status},
            name=body["metadata"]["name"],
            namespace=body["metadata"]["namespace"],
            content_type="application/merge-patch+json",
        ).to_dict()


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    with FakeCluster(ready_after=2, deadline_after=3) as cluster:
        k = Kube(cluster, tmp_path)
        yield k
        k.api.close()


def make_kube(tmp_path: Path, **options: Any) -> Any:
    """A context manager for a cluster with other options."""

    class _Ctx:
        def __enter__(self) -> Kube:
            self.cluster = FakeCluster(**options).start()
            self.kube = Kube(self.cluster, tmp_path)
            return self.kube

        def __exit__(self, *exc: object) -> None:
            self.kube.api.close()
            self.cluster.stop()

    return _Ctx()


def status_code(excinfo: pytest.ExceptionInfo[ApiException]) -> int:
    return int(excinfo.value.status or 0)


def message(excinfo: pytest.ExceptionInfo[ApiException]) -> str:
    """The Status message the server answered with."""
    return json.loads(excinfo.value.body or "{}")["message"]


# -- discovery --------------------------------------------------------------------------------


def test_discovery_finds_the_builtin_kinds_and_their_status_subresources(kube: Kube) -> None:
    deployments = kube.res("apps/v1", "Deployment")
    assert (deployments.name, deployments.namespaced) == ("deployments", True)
    assert "status" in deployments.subresources
    assert kube.res("v1", "Namespace").namespaced is False
    assert kube.res("v1", "ConfigMap").subresources == {}
    assert kube.res("apiextensions.k8s.io/v1", "CustomResourceDefinition").namespaced is False
    with pytest.raises(ResourceNotFoundError):
        kube.res("argoproj.io/v1alpha1", "Rollout")
    assert kube.cluster.count("GET", path_contains="/apis/apps/v1") == 1  # lazily, once


def test_unknown_paths_are_a_404_status(kube: Kube) -> None:
    with pytest.raises(ApiException) as excinfo:
        kube.dyn.request("GET", "/apis/nope.example.com/v1/widgets")
    assert status_code(excinfo) == 404


# -- server-side apply ----------------------------------------------------------------------------


def test_apply_creates_then_updates_and_bumps_generation_only_on_spec_change(kube: Kube) -> None:
    created = kube.apply(deployment())
    assert created["metadata"]["generation"] == 1
    assert created["spec"]["replicas"] == 1  # defaulted
    assert created["spec"]["progressDeadlineSeconds"] == 600
    assert created["spec"]["strategy"]["type"] == "RollingUpdate"
    assert [m["manager"] for m in created["metadata"]["managedFields"]] == [MANAGER]

    again = kube.apply(deployment())
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]  # a no-op
    assert again["metadata"]["generation"] == 1

    labelled = deployment()
    labelled["metadata"]["labels"]["team"] = "shop"
    relabelled = kube.apply(labelled)
    assert relabelled["metadata"]["generation"] == 1  # metadata only
    assert int(relabelled["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    updated = kube.apply(deployment(image="nginx:1.28", replicas=3))
    assert updated["metadata"]["generation"] == 2
    assert updated["spec"]["replicas"] == 3
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert "team" not in updated["metadata"]["labels"]  # no longer applied by this manager: removed


def test_apply_needs_a_field_manager(kube: Kube) -> None:
    resource = kube.res("apps/v1", "Deployment")
    with pytest.raises(ApiException) as excinfo:
        resource.server_side_apply(body=deployment(), namespace="default")
    assert status_code(excinfo) == 400
    assert "fieldManager: Required value" in message(excinfo)
    assert kube.cluster.get("apps/v1", "Deployment", "web") is None


def test_apply_into_a_missing_namespace_is_not_found(kube: Kube) -> None:
    body = deployment()
    body["metadata"]["namespace"] = "shop"
    with pytest.raises(ApiException) as excinfo:
        kube.apply(body)
    assert status_code(excinfo) == 404
    assert message(excinfo) == 'namespaces "shop" not found'


def test_invalid_objects_are_422_naming_the_object(kube: Kube) -> None:
    body = deployment()
    del body["spec"]["template"]
    with pytest.raises(ApiException) as excinfo:
        kube.apply(body)
    assert status_code(excinfo) == 422
    assert message(excinfo) == 'Deployment.apps "web" is invalid: spec.template: Required value'


def test_dry_run_returns_the_result_and_stores_nothing(kube: Kube) -> None:
    before = kube.cluster.objects()
    preview = kube.apply(deployment(), dry_run="All")
    assert preview["metadata"]["generation"] == 1
    assert preview["spec"]["replicas"] == 1
    assert kube.cluster.objects() == before
    assert kube.cluster.count("PATCH", dry_run=True, content_type="apply-patch") == 1

    live = kube.apply(deployment())
    preview = kube.apply(deployment(replicas=5), dry_run="All")
    assert preview["metadata"]["generation"] == 2
    assert preview["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    stored = kube.cluster.get("apps/v1", "Deployment", "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 1
    assert stored["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]


def test_status_is_written_only_through_the_status_subresource(kube: Kube) -> None:
    body = deployment()
    body["status"] = {"readyReplicas": 99}
    created = kube.apply(body)
    assert created.get("status", {}).get("readyReplicas") != 99

    patched = kube.status_patch(body, {"readyReplicas": 7})
    assert patched["status"]["readyReplicas"] == 7
    stored = kube.cluster.get("apps/v1", "Deployment", "web")
    assert stored is not None
    assert stored["metadata"]["generation"] == 1

    resource = kube.res("apps/v1", "Deployment")
    through_main = resource.patch(
        body={"status": {"readyReplicas": 1}},
        name="web",
        namespace="default",
        content_type="application/merge-patch+json",
    ).to_dict()
    assert through_main["status"]["readyReplicas"] == 7  # ignored on the main resource
    resource.status.patch(
        body={"spec": {"replicas": 9}, "status": {"readyReplicas": 8}},
        name="web",
        namespace="default",
        content_type="application/merge-patch+json",
    )
    stored = kube.cluster.get("apps/v1", "Deployment", "web")
    assert stored is not None
    assert (stored["spec"]["replicas"], stored["status"]["readyReplicas"]) == (1, 8)


def test_merge_patch_with_a_stale_resource_version_is_a_conflict(kube: Kube) -> None:
    created = kube.apply(deployment())
    kube.cluster.edit("apps/v1", "Deployment", "web", "default", lambda o: o["metadata"]["labels"].update(x="y"))
    resource = kube.res("apps/v1", "Deployment")
    with pytest.raises(ApiException) as excinfo:
        resource.patch(
            body={"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"replicas": 2}},
            name="web",
            namespace="default",
            content_type="application/merge-patch+json",
        )
    assert status_code(excinfo) == 409
    assert "the object has been modified" in message(excinfo)
    stored = kube.cluster.get("apps/v1", "Deployment", "web")
    assert stored is not None and stored["spec"]["replicas"] == 1


# -- controllers ----------------------------------------------------------------------------------


def test_a_deployment_gets_available_after_ready_after_status_reads(kube: Kube) -> None:
    body = deployment(replicas=2)
    kube.apply(body)
    first = kube.read(body)
    assert first["status"].get("observedGeneration") is None  # not observed yet
    second = kube.read(body)
    assert second["status"]["observedGeneration"] == 1
    assert second["status"]["availableReplicas"] == 0
    third = kube.read(body)
    assert third["status"]["availableReplicas"] == 2
    progressing = next(c for c in third["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"
    assert third["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    # A new template is a new generation, observed a tick late, and a new revision.
    kube.apply(deployment(image="nginx:1.28", replicas=2))
    assert kube.read(body)["status"]["observedGeneration"] == 1
    assert kube.read(body)["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


def test_a_broken_image_exceeds_the_progress_deadline(kube: Kube) -> None:
    body = deployment(image="registry/bad:1")
    kube.apply(body)
    reads = [kube.read(body) for _ in range(4)]  # deadline_after=3: the 4th read is past it
    for read in reads:
        assert read["status"].get("availableReplicas", 0) == 0
    progressing = next(c for c in reads[-1]["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert (
        progressing["message"].startswith('ReplicaSet "web-') and "has timed out progressing" in progressing["message"]
    )
    earlier = next(c for c in reads[-2]["status"]["conditions"] if c["type"] == "Progressing")
    assert earlier["reason"] == "ReplicaSetUpdated"


def test_the_typed_api_sees_the_same_objects(kube: Kube) -> None:
    kube.apply(deployment())
    apps = AppsV1Api(kube.api)
    got = apps.read_namespaced_deployment("web", "default")
    assert got.metadata is not None and got.metadata.generation == 1
    listed = apps.list_namespaced_deployment("default", label_selector="app=web")
    assert [d.metadata.name for d in listed.items if d.metadata] == ["web"]
    assert apps.list_namespaced_deployment("default", label_selector="app!=web").items == []


# -- CRDs and Rollouts ----------------------------------------------------------------------------


def test_a_crd_is_discoverable_once_established(kube: Kube) -> None:
    kube.apply(copy.deepcopy(ROLLOUT_CRD))
    with pytest.raises(ResourceNotFoundError):
        kube.res("argoproj.io/v1alpha1", "Rollout")  # stored, not yet established
    crd = kube.read(ROLLOUT_CRD)  # crd_established_after=1: this read establishes it
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    kube.dyn.resources.invalidate_cache()
    rollouts = kube.res("argoproj.io/v1alpha1", "Rollout")
    assert rollouts.namespaced and "status" in rollouts.subresources


def walk(kube: Kube, body: dict[str, Any], reads: int) -> list[dict[str, Any]]:
    return [kube.read(body)["status"] for _ in range(reads)]


def test_a_first_rollout_goes_healthy_at_once(tmp_path: Path) -> None:
    with make_kube(tmp_path, preinstalled_crds=["rollouts.argoproj.io"]) as kube:
        body = rollout()
        kube.apply(body)
        lagging, status = walk(kube, body, 2)
        assert lagging.get("observedGeneration") is None
        assert status["observedGeneration"] == "1"
        assert status["phase"] == "Healthy"
        assert status["stableRS"] == status["currentPodHash"]
        assert status["currentStepIndex"] == 4


def test_a_rollout_walks_to_the_pause_then_promote_continues_and_abort_degrades(tmp_path: Path) -> None:
    with make_kube(tmp_path, preinstalled_crds=["rollouts.argoproj.io"]) as kube:
        body = rollout()
        kube.apply(body)
        stable = walk(kube, body, 2)[-1]["stableRS"]
        kube.apply(rollout(image="app:2"))
        statuses = walk(kube, body, 4)  # lag, setWeight, reach the pause, stay paused
        assert statuses[0]["observedGeneration"] == "1"
        assert statuses[1]["currentStepIndex"] == 1 and statuses[1]["phase"] == "Progressing"
        paused = statuses[3]
        assert (paused["phase"], paused["currentStepIndex"], paused["controllerPause"]) == ("Paused", 1, True)
        assert [c["reason"] for c in paused["pauseConditions"]] == ["CanaryPauseStep"]
        assert paused["currentPodHash"] != stable

        kube.status_patch(body, {"pauseConditions": None})  # kubectl argo rollouts promote
        after = walk(kube, body, 2)
        assert after[0]["currentStepIndex"] == 2 and "controllerPause" not in after[0]
        assert after[1]["currentStepIndex"] == 3  # setWeight 50 done, at the timed pause

        kube.status_patch(body, {"abort": True})  # kubectl argo rollouts abort
        aborted = kube.read(body)["status"]
        assert aborted["phase"] == "Degraded"
        assert aborted["message"] == "RolloutAborted: Rollout aborted update to revision 2"
        assert aborted["stableRS"] == stable and aborted["currentStepIndex"] == 0

        kube.apply(rollout(image="app:1"))  # back to the stable template
        back = walk(kube, body, 2)[-1]
        assert (back["phase"], back["currentStepIndex"], back["stableRS"]) == ("Healthy", 4, stable)
        assert "abort" not in back


def test_a_broken_canary_degrades_with_progress_deadline_exceeded(tmp_path: Path) -> None:
    with make_kube(tmp_path, preinstalled_crds=["rollouts.argoproj.io"], deadline_after=3) as kube:
        body = rollout()
        kube.apply(body)
        stable = walk(kube, body, 2)[-1]["stableRS"]
        kube.apply(rollout(image="app:bad"))
        statuses = walk(kube, body, 4)
        assert [s["phase"] for s in statuses[1:]] == ["Progressing", "Progressing", "Degraded"]
        assert statuses[-1]["message"].startswith('ProgressDeadlineExceeded: ReplicaSet "shop-')
        assert statuses[-1]["currentStepIndex"] == 0 and statuses[-1]["stableRS"] == stable


def test_promote_full_skips_the_remaining_steps_and_a_timed_pause_ends_by_itself(tmp_path: Path) -> None:
    with make_kube(tmp_path, preinstalled_crds=["rollouts.argoproj.io"]) as kube:
        body = rollout(steps=[{"pause": {"duration": "1m"}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 80}])
        kube.apply(body)
        walk(kube, body, 2)
        kube.apply({**body, "spec": {**body["spec"], "template": rollout(image="app:2")["spec"]["template"]}})
        timed, moved_on, weighted, paused = walk(kube, body, 5)[1:]
        assert (timed["phase"], timed["currentStepIndex"]) == ("Paused", 0)
        assert (moved_on["phase"], moved_on["currentStepIndex"]) == ("Progressing", 1)
        assert weighted["currentStepIndex"] == 2
        assert (paused["phase"], paused["currentStepIndex"]) == ("Paused", 2)
        kube.status_patch(body, {"promoteFull": True})
        done = kube.read(body)["status"]
        assert (done["phase"], done["currentStepIndex"], done["stableRS"]) == ("Healthy", 4, done["currentPodHash"])
        assert "pauseConditions" not in done and "promoteFull" not in done


def test_retry_after_abort_walks_the_steps_again(tmp_path: Path) -> None:
    with make_kube(tmp_path, preinstalled_crds=["rollouts.argoproj.io"]) as kube:
        body = rollout()
        kube.apply(body)
        walk(kube, body, 2)
        kube.apply(rollout(image="app:2"))
        walk(kube, body, 3)
        kube.status_patch(body, {"abort": True})
        assert kube.read(body)["status"]["phase"] == "Degraded"
        kube.status_patch(body, {"abort": False})  # kubectl argo rollouts retry
        again = walk(kube, body, 2)
        assert [(s["phase"], s["currentStepIndex"]) for s in again] == [("Progressing", 1), ("Paused", 1)]


# -- other workloads ---------------------------------------------------------------------------------


def statefulset(image: str = "db:1", replicas: int = 3, strategy: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "serviceName": "db",
        "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": image}]}},
    }
    if strategy is not None:
        spec["updateStrategy"] = strategy
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": spec,
    }


def test_statefulset_defaults_follow_set_defaults_statefulset(kube: Kube) -> None:
    omitted = kube.apply(statefulset())
    assert omitted["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    explicit = statefulset(strategy={"type": "RollingUpdate"})
    explicit["metadata"]["name"] = "db2"
    explicit = kube.apply(explicit)
    assert explicit["spec"]["updateStrategy"] == {"type": "RollingUpdate"}


def test_a_partitioned_statefulset_updates_only_the_ordinals_above_the_partition(kube: Kube) -> None:
    body = statefulset()
    kube.apply(body)
    ready = walk(kube, body, 3)[-1]
    assert (ready["readyReplicas"], ready["updatedReplicas"]) == (3, 3)
    assert ready["currentRevision"] == ready["updateRevision"]
    kube.apply(statefulset(image="db:2", strategy={"rollingUpdate": {"partition": 2}}))
    rolling, rolled = walk(kube, body, 3)[1:]
    assert rolling["updatedReplicas"] == 0 and rolling["updateRevision"] != ready["updateRevision"]
    assert (rolled["readyReplicas"], rolled["updatedReplicas"]) == (3, 1)
    assert rolled["currentRevision"] == ready["currentRevision"]  # two pods held back on the old revision


def test_a_daemonset_runs_on_three_nodes(kube: Kube) -> None:
    body = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": "agent:1"}]},
            },
        },
    }
    created = kube.apply(body)
    assert created["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    observed, done = walk(kube, body, 3)[1:]
    assert (observed["desiredNumberScheduled"], observed["numberAvailable"]) == (3, 0)
    assert (done["updatedNumberScheduled"], done["numberAvailable"]) == (3, 3)


# -- plain CRUD, injected errors -----------------------------------------------------------------------


def configmap(data: dict[str, str], name: str = "settings") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": data}


def test_create_replace_delete_and_their_errors(kube: Kube) -> None:
    resource = kube.res("v1", "ConfigMap")
    created = resource.create(body=configmap({"a": "1"}), namespace="default").to_dict()
    with pytest.raises(ApiException) as excinfo:
        resource.create(body=configmap({"a": "1"}), namespace="default")
    assert (status_code(excinfo), message(excinfo)) == (409, 'configmaps "settings" already exists')

    replaced = resource.replace(body={**created, "data": {"b": "2"}}, namespace="default").to_dict()
    assert replaced["data"] == {"b": "2"}
    with pytest.raises(ApiException) as excinfo:  # the resourceVersion it read is stale now
        resource.replace(body={**created, "data": {"c": "3"}}, namespace="default")
    assert status_code(excinfo) == 409

    resource.delete(name="settings", namespace="default", dry_run="All")
    assert kube.cluster.get("v1", "ConfigMap", "settings") is not None
    resource.delete(name="settings", namespace="default")
    assert kube.cluster.get("v1", "ConfigMap", "settings") is None
    with pytest.raises(ApiException) as excinfo:
        resource.get(name="settings", namespace="default")
    assert (status_code(excinfo), message(excinfo)) == (404, 'configmaps "settings" not found')


def test_apply_removes_what_the_manager_stopped_applying_and_keeps_what_others_set(kube: Kube) -> None:
    kube.apply(configmap({"a": "1", "b": "2"}))
    kube.cluster.edit("v1", "ConfigMap", "settings", "default", lambda o: o["data"].update(drift="x"))
    applied = kube.apply(configmap({"a": "1"}))
    assert applied["data"] == {"a": "1", "drift": "x"}


def test_labels_select_what_a_list_returns(kube: Kube) -> None:
    for name, labels in (("a", {"app": "shop", "tier": "web"}), ("b", {"app": "shop"}), ("c", {"app": "other"})):
        body = configmap({}, name)
        body["metadata"]["labels"] = labels
        kube.apply(body)
    resource = kube.res("v1", "ConfigMap")

    def names(selector: str) -> list[str]:
        return [item.metadata.name for item in resource.get(namespace="default", label_selector=selector).items]

    assert names("app=shop") == ["a", "b"]
    assert names("app=shop,tier") == ["a"]
    assert names("app!=shop") == ["c"]
    assert names("!tier") == ["b", "c"]
    assert names("app in (other, shop),tier notin (web)") == ["b", "c"]


def test_json_patch_and_strategic_merge_patch(kube: Kube) -> None:
    kube.apply(configmap({"a": "1"}))
    resource = kube.res("v1", "ConfigMap")
    patched = resource.patch(
        body=[{"op": "add", "path": "/data/b", "value": "2"}, {"op": "remove", "path": "/data/a"}],
        name="settings",
        namespace="default",
        content_type="application/json-patch+json",
    ).to_dict()
    assert patched["data"] == {"b": "2"}
    patched = resource.patch(body={"data": {"c": "3", "b": None}}, name="settings", namespace="default").to_dict()
    assert patched["data"] == {"c": "3"}
    assert kube.cluster.count("PATCH", content_type="strategic-merge-patch") == 1


def test_fail_next_answers_with_an_error_status_then_recovers(kube: Kube) -> None:
    kube.cluster.fail_next("PATCH", "/deployments/web", 500, "etcd is sad", times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as excinfo:
            kube.apply(deployment())
        assert (status_code(excinfo), message(excinfo)) == (500, "etcd is sad")
        assert json.loads(excinfo.value.body or "{}")["reason"] == "InternalError"
    assert kube.apply(deployment())["metadata"]["generation"] == 1
    assert kube.cluster.count("PATCH", path_contains="/deployments/web") == 3


def test_typed_api_apply_and_dry_run(kube: Kube) -> None:
    apps = AppsV1Api(kube.api)
    preview = apps.patch_namespaced_deployment(
        "web",
        "default",
        deployment(),
        field_manager=MANAGER,
        force=True,
        dry_run="All",
        _content_type="application/apply-patch+yaml",
    )
    assert preview.spec.replicas == 1
    assert kube.cluster.get("apps/v1", "Deployment", "web") is None
    apps.patch_namespaced_deployment(
        "web", "default", deployment(), field_manager=MANAGER, force=True, _content_type="application/apply-patch+yaml"
    )
    assert kube.cluster.get("apps/v1", "Deployment", "web") is not None
    assert kube.cluster.count("PATCH", dry_run=True) == 1 and kube.cluster.count("PATCH", dry_run=False) == 1


def test_deleting_a_crd_takes_its_resources_out_of_discovery(tmp_path: Path) -> None:
    with make_kube(tmp_path, preinstalled_crds=["rollouts.argoproj.io"]) as kube:
        kube.apply(rollout())
        kube.res("apiextensions.k8s.io/v1", "CustomResourceDefinition").delete(name="rollouts.argoproj.io")
        assert kube.cluster.objects("Rollout") == []
        kube.dyn.resources.invalidate_cache()
        with pytest.raises(ResourceNotFoundError):
            kube.res("argoproj.io/v1alpha1", "Rollout")


def test_an_unknown_preinstalled_crd_is_refused() -> None:
    with pytest.raises(ValueError, match=r"known: rollouts\.argoproj\.io"):
        FakeCluster(preinstalled_crds=["widgets.example.com"])


def test_a_delete_with_a_uid_precondition_spares_another_object_of_that_name(tmp_path):
    from kubernetes import client as k8s

    with FakeCluster() as cluster:
        live = cluster.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}})
        api = k8s.CoreV1Api(
            kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig(tmp_path / "kc")))
        )
        other = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid="uid-of-an-object-since-deleted"))
        with pytest.raises(ApiException) as refused:
            api.delete_namespaced_config_map("c", "default", body=other)
        assert refused.value.status == 409 and "Precondition failed" in str(refused.value.body)
        assert cluster.get("v1", "ConfigMap", "c") is not None
        same = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=live["metadata"]["uid"]))
        api.delete_namespaced_config_map("c", "default", body=same)
        assert cluster.get("v1", "ConfigMap", "c") is None
