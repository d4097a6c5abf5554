"""Manifests of a Kubernetes step: loading, rendering, overrides, Helm's order, ApplySet labels, digest."""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from prodline.activities.kube.manifests import (
    INSTALL_ORDER,
    PART_OF_LABEL,
    Manifest,
    ManifestError,
    apply_overrides,
    applyset_id,
    check_unique,
    group_kinds,
    install_order,
    label_members,
    load_manifests,
    object_key,
    parent_secret,
    render,
    rendered_digest,
)
from prodline.config.steps import KubernetesPatch
from prodline.config.templates import render as render_template
from prodline.errors import INVALID


def write(base: Path, name: str, text: str) -> Path:
    path = base / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def deployment(name: str = "web", containers: tuple[str, ...] = ("web",), **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": c, "image": f"{c}:old"} for c in containers], **extra}},
        },
    }


def obj(kind: str, name: str, api: str = "v1") -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}}


def manifests(*objs: dict[str, Any]) -> list[Manifest]:
    return [Manifest(o, f"m.yaml#{i + 1}") for i, o in enumerate(objs)]


# --- loading -----------------------------------------------------------------------------------


def test_multi_document_yaml_skips_empty_documents_and_numbers_sources(tmp_path: Path):
    write(
        tmp_path,
        "k8s/web.yaml",
        """\
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: cfg}
        data: {built: 2024-01-01, 1: one}
        ---
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        """,
    )
    loaded = load_manifests(["k8s/web.yaml"], tmp_path)
    assert [(m.obj["kind"], m.source) for m in loaded] == [
        ("ConfigMap", "k8s/web.yaml#1"),
        ("Deployment", "k8s/web.yaml#3"),
    ]
    # As kubectl reads YAML: a date stays the string written, keys become strings.
    assert loaded[0].obj["data"] == {"built": "2024-01-01", "1": "one"}


def test_folder_is_read_recursively_in_name_order_yaml_yml_json_only(tmp_path: Path):
    write(tmp_path, "k8s/b.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: b}\n")
    write(tmp_path, "k8s/a/z.yml", "apiVersion: v1\nkind: Service\nmetadata: {name: az}\n")
    write(tmp_path, "k8s/c.json", json.dumps(obj("Service", "c")))
    write(tmp_path, "k8s/README.md", "not a manifest")
    loaded = load_manifests(["k8s"], tmp_path)
    assert [m.source for m in loaded] == ["k8s/a/z.yml#1", "k8s/b.yaml#1", "k8s/c.json#1"]


def test_list_kind_is_flattened(tmp_path: Path):
    items = [obj("ConfigMap", "one"), obj("ConfigMap", "two")]
    write(tmp_path, "list.yaml", json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    loaded = load_manifests(["list.yaml"], tmp_path)
    assert [m.obj["metadata"]["name"] for m in loaded] == ["one", "two"]
    assert loaded[1].source == "list.yaml#1 items[1]"


def test_yaml_syntax_error_names_file_document_and_line(tmp_path: Path):
    write(tmp_path, "k8s/web.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nkind: [unclosed\n")
    with pytest.raises(ManifestError) as e:
        load_manifests(["k8s/web.yaml"], tmp_path)
    assert "k8s/web.yaml, document 2: invalid YAML at line " in str(e.value)
    assert e.value.exit_code == INVALID


def test_invalid_json_names_line(tmp_path: Path):
    write(tmp_path, "a.json", '{\n  "kind": \n}')
    with pytest.raises(ManifestError, match=r"a\.json: invalid JSON at line 3"):
        load_manifests(["a.json"], tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "not a Kubernetes object (a list)"),
        ("kind: Service\nmetadata: {name: a}\n", "apiVersion is missing; set it (e.g. apiVersion: apps/v1)"),
        ("apiVersion: v1\nmetadata: {name: a}\n", "kind is missing"),
        ("apiVersion: v1\nkind: Service\n", "metadata is missing"),
        ("apiVersion: v1\nkind: Service\nmetadata: {generateName: a-}\n", "metadata.name is missing (generateName"),
    ],
)
def test_bad_document_is_named_with_field_and_fix(tmp_path: Path, text: str, expected: str):
    write(tmp_path, "x.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\n" + text)
    with pytest.raises(ManifestError) as e:
        load_manifests(["x.yaml"], tmp_path)
    assert str(e.value).startswith("x.yaml, document 2: ")
    assert expected in str(e.value)


def test_paths_outside_the_service_folder_are_refused(tmp_path: Path):
    base = tmp_path / "svc"
    write(tmp_path, "outside.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n")
    base.mkdir()
    with pytest.raises(ManifestError, match="leaves the service file's folder"):
        load_manifests(["../outside.yaml"], base)
    with pytest.raises(ManifestError, match="absolute paths are refused"):
        load_manifests([str(tmp_path / "outside.yaml")], base)
    (base / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    with pytest.raises(ManifestError, match="leaves the service file's folder"):
        load_manifests(["link.yaml"], base)


def test_missing_path_and_empty_folder(tmp_path: Path):
    with pytest.raises(ManifestError, match="'k8s': no such file or folder"):
        load_manifests(["k8s"], tmp_path)
    (tmp_path / "k8s").mkdir()
    write(tmp_path, "k8s/notes.txt", "x")
    with pytest.raises(ManifestError, match=r"holds no \*\.yaml, \*\.yml or \*\.json file"):
        load_manifests(["k8s"], tmp_path)


def test_the_same_object_twice_is_refused_whatever_its_version(tmp_path: Path):
    write(tmp_path, "a.yaml", "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\n")
    write(tmp_path, "b.yaml", "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\n")
    with pytest.raises(ManifestError, match=r"b\.yaml, document 1: .* is also defined in a\.yaml, document 1"):
        load_manifests(["a.yaml", "b.yaml"], tmp_path)
    # Another namespace is another object.
    one, two = obj("Service", "web"), obj("Service", "web")
    two["metadata"]["namespace"] = "other"
    check_unique(manifests(one, two))


# --- rendering ---------------------------------------------------------------------------------


def test_render_substitutes_values_not_keys_and_keeps_input():
    source = manifests({**obj("ConfigMap", "cfg-{{ version }}"), "data": {"{{ version }}": "v={{ version }}", "n": 3}})
    out = render(source, lambda text: render_template(text, {"version": "1.2"}))
    assert out[0].obj["metadata"]["name"] == "cfg-1.2"
    assert out[0].obj["data"] == {"{{ version }}": "v=1.2", "n": 3}
    assert source[0].obj["metadata"]["name"] == "cfg-{{ version }}"


def test_render_error_names_source_and_field_path():
    source = manifests(deployment(), deployment("api", containers=("a", "b")))
    source[1].obj["spec"]["template"]["spec"]["containers"][1]["image"] = "b:{{ params.tag }}"
    with pytest.raises(ManifestError) as e:
        render(source, lambda text: render_template(text, {"version": "1"}))
    assert str(e.value).startswith("m.yaml, document 2: spec.template.spec.containers[1].image: unknown template name")


# --- overrides ---------------------------------------------------------------------------------


def test_images_land_in_every_pod_template_by_container_name():
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "x"}]}}}}},
    }
    init = deployment(initContainers=[{"name": "migrate", "image": "m:old"}])
    source = manifests(init, cron, obj("Service", "web"))
    out = apply_overrides(source, images={"web": "web:2", "migrate": "m:2"}, replicas=None, patches=[])
    pod = out[0].obj["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "web:2"
    assert pod["initContainers"][0]["image"] == "m:2"
    assert out[1].obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2"
    assert source[0].obj["spec"]["template"]["spec"]["containers"][0]["image"] == "web:old"  # a copy


def test_image_for_an_unknown_container_names_the_available_ones():
    with pytest.raises(
        ManifestError, match=r"images: no container is named wbe; containers in the manifests: sidecar, web"
    ):
        apply_overrides(
            manifests(deployment(containers=("web", "sidecar"))), images={"wbe": "x"}, replicas=None, patches=[]
        )


def test_replicas_set_on_scalable_kinds_only():
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"}, "spec": {}}
    daemon = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"}, "spec": {}}
    out = apply_overrides(manifests(deployment(), rollout, daemon), images={}, replicas=3, patches=[])
    assert [o.obj["spec"].get("replicas") for o in out] == [3, 3, None]
    with pytest.raises(ManifestError, match="no Deployment, StatefulSet, ReplicaSet or Rollout"):
        apply_overrides(manifests(daemon), images={}, replicas=3, patches=[])


def test_patches_set_create_and_remove_fields():
    patches = [
        KubernetesPatch(
            kind="Deployment", name="web", path="spec.template.spec.containers[0].resources.limits.cpu", value="1"
        ),
        KubernetesPatch(kind="Deployment", path="spec.strategy.type", value="Recreate"),
        KubernetesPatch(kind="Deployment", path="spec.replicas", value=None),
    ]
    out = apply_overrides(manifests(deployment(), deployment("api")), images={}, replicas=None, patches=patches)
    web, api = out[0].obj["spec"], out[1].obj["spec"]
    assert web["template"]["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "1"}}
    assert "resources" not in api["template"]["spec"]["containers"][0]  # name picked web only
    assert web["strategy"] == api["strategy"] == {"type": "Recreate"}
    assert "replicas" not in web and "replicas" not in api


def test_patch_matching_nothing_is_refused():
    with pytest.raises(
        ManifestError, match=r"patches\[0\]: no Deployment named 'wbe' in the manifests \(Deployment objects: web\)"
    ):
        apply_overrides(
            manifests(deployment()),
            images={},
            replicas=None,
            patches=[KubernetesPatch(kind="Deployment", name="wbe", path="spec.x", value=1)],
        )
    with pytest.raises(ManifestError, match=r"no StatefulSet in the manifests \(kinds in the manifests: Deployment\)"):
        apply_overrides(
            manifests(deployment()),
            images={},
            replicas=None,
            patches=[KubernetesPatch(kind="StatefulSet", path="spec.x", value=1)],
        )


def test_patch_index_out_of_range_names_object():
    patch = KubernetesPatch(kind="Deployment", path="spec.template.spec.containers[4].image", value="x")
    with pytest.raises(ManifestError, match=r"patches\[0\]: .* in m\.yaml, document 1: no item \[4\]"):
        apply_overrides(manifests(deployment()), images={}, replicas=None, patches=[patch])


# --- order, keys -------------------------------------------------------------------------------


def test_install_order_is_helms_with_unknown_kinds_last_by_name_and_stable():
    objs = [
        obj("Rollout", "r", "argoproj.io/v1alpha1"),
        obj("Deployment", "d1", "apps/v1"),
        obj("AnalysisTemplate", "a", "argoproj.io/v1alpha1"),
        obj("Service", "s"),
        obj("Deployment", "d2", "apps/v1"),
        obj("CustomResourceDefinition", "crd", "apiextensions.k8s.io/v1"),
        obj("Namespace", "shop"),
        obj("Rollout", "r0", "argoproj.io/v1alpha1"),
    ]
    ordered = install_order(objs)
    assert [o["metadata"]["name"] for o in ordered] == ["shop", "crd", "s", "d1", "d2", "a", "r", "r0"]
    assert INSTALL_ORDER[:2] == ("PriorityClass", "Namespace") and INSTALL_ORDER[-1] == "ValidatingWebhookConfiguration"
    wrapped = install_order(manifests(*objs))
    assert [m.obj["metadata"]["name"] for m in wrapped] == ["shop", "crd", "s", "d1", "d2", "a", "r", "r0"]


def test_object_key():
    assert object_key(deployment()) == "apps/v1 Deployment shop/web"
    assert object_key(obj("Namespace", "shop")) == "v1 Namespace shop"


# --- ApplySet ----------------------------------------------------------------------------------


def test_applyset_id_follows_the_kep_formula():
    # KEP-3659: base64url(sha256("<name>.<namespace>.<Kind>.<group>")) without padding, in "applyset-...-v1".
    raw = hashlib.sha256(b"my-set.default.Secret.").digest()
    expected = "applyset-" + base64.b64encode(raw, altchars=b"-_").decode().replace("=", "") + "-v1"
    assert applyset_id("my-set", "default") == expected
    assert applyset_id("my-set", "default", "ConfigMap") != expected
    assert len(expected) == len("applyset-") + 43 + len("-v1")  # 32 bytes -> 43 characters


def test_members_parent_and_group_kinds():
    objs = [deployment(), obj("ConfigMap", "c"), deployment("api")]
    labelled = label_members(objs, "applyset-x-v1")
    assert all(o["metadata"]["labels"][PART_OF_LABEL] == "applyset-x-v1" for o in labelled)
    assert "labels" not in objs[0]["metadata"]  # copies
    assert group_kinds(objs) == ["ConfigMap", "Deployment.apps"]
    parent = parent_secret("web", "shop", "applyset-x-v1", group_kinds(objs), additional_namespaces=["shop", "b"])
    assert parent["metadata"]["labels"] == {"applyset.kubernetes.io/id": "applyset-x-v1"}
    annotations = parent["metadata"]["annotations"]
    assert annotations["applyset.kubernetes.io/contains-group-kinds"] == "ConfigMap,Deployment.apps"
    assert annotations["applyset.kubernetes.io/tooling"].startswith("prodline/v")
    assert annotations["applyset.kubernetes.io/additional-namespaces"] == "b"


def test_rendered_digest_is_canonical_json():
    a = [{"b": 1, "a": [1, 2]}]
    assert rendered_digest(a) == "sha256:" + hashlib.sha256(b'[{"a":[1,2],"b":1}]').hexdigest()
    assert rendered_digest([{"a": [1, 2], "b": 1}]) == rendered_digest(a)
    assert rendered_digest([{"a": [2, 1], "b": 1}]) != rendered_digest(a)
