"""The plan of a Kubernetes step: server fields stripped, Secrets masked, leaves compared, described, digested."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from prodline.activities.kube.diff import (
    FieldChange,
    ObjectDiff,
    describe,
    diff_digest,
    diff_object,
    digest_input,
    mask_secrets,
    strip_server_fields,
)


def live_deployment(replicas: int = 2, image: str = "web:1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "u-1",
            "resourceVersion": "17",
            "generation": 4,
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "managedFields": [{"manager": "prodline", "operation": "Apply"}],
            "annotations": {"deployment.kubernetes.io/revision": "3"},
            "labels": {"app": "web"},
        },
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
        "status": {"replicas": replicas, "availableReplicas": replicas},
    }


def secret(**data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}, "data": dict(data)}


KEY = "apps/v1 Deployment shop/web"


def test_strip_removes_status_and_server_metadata_only():
    stripped = strip_server_fields(live_deployment())
    assert "status" not in stripped
    assert stripped["metadata"] == {"name": "web", "namespace": "shop", "labels": {"app": "web"}}
    kept = live_deployment()
    kept["metadata"]["annotations"]["team"] = "a"
    assert strip_server_fields(kept)["metadata"]["annotations"] == {"team": "a"}
    assert kept["metadata"]["uid"] == "u-1"  # a copy


def test_server_only_differences_are_unchanged():
    merged = live_deployment()
    merged["metadata"].update(
        resourceVersion="18", generation=5, annotations={"deployment.kubernetes.io/revision": "4"}
    )
    merged["status"] = {"replicas": 7}
    assert diff_object(KEY, live_deployment(), merged) == ObjectDiff(KEY, "unchanged", [])


def test_update_lists_nested_and_list_leaves_with_missing_sides_as_none():
    live, merged = live_deployment(), live_deployment(replicas=3, image="web:2")
    merged["spec"]["template"]["spec"]["containers"].append({"name": "proxy", "image": "envoy"})
    merged["metadata"]["labels"] = {}  # a field emptied
    live["spec"]["strategy"] = {"type": "Recreate"}  # a field removed
    d = diff_object(KEY, live, merged)
    assert d.action == "update"
    assert d.changes == [
        FieldChange("metadata.labels.app", "web", None),
        FieldChange("spec.replicas", 2, 3),
        FieldChange("spec.strategy.type", "Recreate", None),
        FieldChange("spec.template.spec.containers[0].image", "web:1", "web:2"),
        FieldChange("spec.template.spec.containers[1].image", None, "envoy"),
        FieldChange("spec.template.spec.containers[1].name", None, "proxy"),
    ]


def test_keys_with_dots_are_quoted_in_paths():
    live, merged = live_deployment(), live_deployment()
    merged["metadata"]["annotations"]["example.com/owner"] = "team-a"
    assert diff_object(KEY, live, merged).changes == [
        FieldChange('metadata.annotations["example.com/owner"]', None, "team-a")
    ]


def test_create_and_prune():
    created = diff_object(KEY, None, live_deployment())
    assert created.action == "create"
    assert FieldChange("spec.replicas", None, 2) in created.changes
    assert all(c.before is None for c in created.changes)
    pruned = diff_object(KEY, live_deployment(), None)
    assert pruned.action == "prune" and all(c.after is None for c in pruned.changes)
    with pytest.raises(ValueError, match="neither"):
        diff_object(KEY, None, None)


def test_a_new_services_random_cluster_ip_is_not_part_of_the_plan():
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"clusterIP": "10.0.0.7",
               "clusterIPs": ["10.0.0.7"], "ports": [{"port": 80}]}}  # fmt: skip
    other = json.loads(json.dumps(service).replace("10.0.0.7", "10.0.0.9"))
    assert diff_object("v1 Service web", None, service) == diff_object("v1 Service web", None, other)
    headless = {**service, "spec": {"clusterIP": "None"}}
    assert FieldChange("spec.clusterIP", None, "None") in diff_object("v1 Service web", None, headless).changes
    # An existing Service keeps its IP on both sides: a change there is shown.
    assert diff_object("v1 Service web", service, other).action == "update"


def test_a_new_services_random_node_ports_are_not_part_of_the_plan():
    def node_port(port: int) -> dict[str, object]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"type": "LoadBalancer", "healthCheckNodePort": port + 1000,
                         "ports": [{"port": 80, "nodePort": port}]}}  # fmt: skip

    assert diff_object("v1 Service web", None, node_port(30007)) == diff_object(
        "v1 Service web", None, node_port(31234)
    )
    assert diff_object("v1 Service web", node_port(30007), node_port(31234)).action == "update"


def test_mask_secrets_as_kubectl_masker():
    live = secret(same="c2FtZQ==", changed="b2xk", gone="eA==")
    merged = secret(same="c2FtZQ==", changed="bmV3", added="eQ==")
    merged["stringData"] = {"token": "plain-text-token"}
    a, b = mask_secrets(live, merged)
    assert a is not None and b is not None
    assert a["data"] == {"same": "***", "changed": "*** (before)", "gone": "***"}
    assert b["data"] == {"same": "***", "changed": "*** (after)", "added": "***"}
    assert b["stringData"] == {"token": "***"}
    assert live["data"]["changed"] == "b2xk"  # copies
    # Not a Secret: untouched.
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    assert mask_secrets(cm, None) == (cm, None)


SECRET_VALUES = ("c2VjcmV0LW9uZQ==", "c2VjcmV0LXR3bw==", "hunter2", "bmV3LXNlY3JldA==")


def test_no_secret_value_reaches_the_plan_text_or_the_digest_input():
    live = secret(password=SECRET_VALUES[0], kept=SECRET_VALUES[1])
    live["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps({"data": {"password": SECRET_VALUES[0]}})
    }
    merged = secret(password=SECRET_VALUES[3], kept=SECRET_VALUES[1])
    merged["stringData"] = {"extra": SECRET_VALUES[2]}
    merged["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps({"data": {"password": SECRET_VALUES[3]}})
    }
    diffs = [diff_object("v1 Secret shop/db", live, merged), diff_object("v1 Secret shop/new", None, merged)]
    summary, text = describe(diffs)
    digested = digest_input(diffs)
    assert diff_digest(diffs) == "sha256:" + hashlib.sha256(digested.encode()).hexdigest()
    for value in SECRET_VALUES:
        assert value not in text and value not in summary and value not in digested
    assert 'data.password: "*** (before)" -> "*** (after)"' in text


def test_describe_summary_and_lines():
    update = diff_object(KEY, live_deployment(), live_deployment(replicas=3, image="registry/" + "x" * 100))
    created = ObjectDiff("v1 ConfigMap shop/cfg", "create", [FieldChange("data.a", None, "1")])
    pruned = ObjectDiff("v1 Service shop/old", "prune", [FieldChange("spec.type", "ClusterIP", None)])
    unchanged = ObjectDiff("v1 Service shop/web", "unchanged", [])
    summary, text = describe([created, update, pruned, unchanged, unchanged])
    assert summary == "1 to create, 1 to update, 1 to prune, 2 unchanged"
    lines = text.splitlines()
    assert lines[0:2] == ["+ v1 ConfigMap shop/cfg", '    data.a: "1"']
    assert lines[2:4] == ["~ apps/v1 Deployment shop/web", "    spec.replicas: 2 -> 3"]
    image_line = lines[4]
    assert image_line.startswith('    spec.template.spec.containers[0].image: "web:1" -> "registry/xxx')
    full = json.dumps("registry/" + "x" * 100)
    assert image_line.endswith(f"... (sha256:{hashlib.sha256(full.encode()).hexdigest()[:12]})")
    assert len(image_line) < 160
    assert lines[5:] == ["- v1 Service shop/old"]
    assert "shop/web" not in text.replace("apps/v1 Deployment shop/web", "")  # unchanged: counted only
    added = describe([ObjectDiff(KEY, "update", [FieldChange("spec.paused", None, True)])])[1]
    assert added.splitlines()[1] == "    spec.paused: (none) -> true"


def test_diff_digest_changes_with_any_change_and_is_stable():
    a = [diff_object(KEY, live_deployment(), live_deployment(replicas=3))]
    b = [diff_object(KEY, live_deployment(), live_deployment(replicas=3))]
    c = [diff_object(KEY, live_deployment(), live_deployment(replicas=4))]
    assert diff_digest(a) == diff_digest(b) != diff_digest(c)
    assert diff_digest(a).startswith("sha256:") and len(diff_digest(a)) == 7 + 64
    # A Secret's value changing changes the digest (through its mask), without its value in it.
    s1 = [diff_object("v1 Secret shop/db", secret(k="YQ=="), secret(k="Yg=="))]
    s2 = [diff_object("v1 Secret shop/db", secret(k="YQ=="), secret(k="YQ=="))]
    assert diff_digest(s1) != diff_digest(s2)


def test_long_values_cut_alike_are_told_apart_by_their_hash():
    """Two values that differ only after the cut must not read the same to an approver."""
    before, after = "a" * 100 + "1", "a" * 100 + "2"
    line = describe([ObjectDiff(KEY, "update", [FieldChange("data.blob", before, after)])])[1].splitlines()[1]
    shown_before, shown_after = line.removeprefix("    data.blob: ").split(" -> ")
    assert shown_before != shown_after and shown_before.startswith('"aaaa') and "sha256:" in shown_after
    short = describe([ObjectDiff(KEY, "update", [FieldChange("data.x", "a", "b")])])[1]
    assert "sha256" not in short


def test_masked_values_are_masked_before_they_are_cut():
    """A long secret (an earlier step's sensitive output in a ConfigMap) cut at the width would
    leave its start unmasked if it were masked after the cut: describe masks first."""
    secret = "sk-" + "q7" * 60
    change = FieldChange("data.DSN", None, f"postgres://app:{secret}@db:5432/app?sslmode=require")
    text = describe([ObjectDiff(KEY, "create", [change])], masks=[secret])[1]
    assert "postgres://app:***@db:5432/app" in text and "q7q7" not in text and "sk-" not in text
    nested = FieldChange("spec.args", None, ["--token", secret])
    assert "q7q7" not in describe([ObjectDiff(KEY, "create", [nested])], masks=[secret])[1]
