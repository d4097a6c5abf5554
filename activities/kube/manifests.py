"""A Kubernetes step's objects: loaded from the bundle, rendered, overridden, ordered and labelled.

Pure functions over plain dicts (the shape the ``kubernetes`` DynamicClient takes
and returns with ``.to_dict()``); no cluster is reached here.

* :func:`load_manifests`: files or folders below the service file's folder
  (``*.yaml``, ``*.yml``, ``*.json``, recursive, in name order), multi-document
  YAML, empty documents skipped, a ``List`` flattened into its ``items``, like
  ``kubectl apply -f DIR -R``. YAML is read as kubectl reads it
  (sigs.k8s.io/yaml over go-yaml v2): a timestamp-looking scalar stays a string
  and mapping keys become strings. Every error names the file, the document
  (1-based, counting every ``---``) and the field, and says what to do.
* :func:`render`: prodline's ``{{ name }}`` templating over string *values*
  (never keys). Only strings are substituted, so ``replicas: "{{ x }}"`` stays a
  string: numbers come from the ``replicas`` override or a patch.
* :func:`apply_overrides`: the step's ``images`` (by container name, in every pod
  template), ``replicas`` and ``patches`` (``kind``/``name`` pick, dotted path
  sets, null removes), on copies.
* :func:`install_order`: Helm's ``InstallOrder`` (helm ``pkg/release/v1/util/
  kind_sorter.go``), unknown kinds (e.g. ``Rollout``) last by kind name, stable
  (``lessByKind`` with ``sort.SliceStable``).
* ApplySet (KEP-3659, kubectl ``pkg/cmd/apply/applyset.go``): the parent ID
  exactly as ``ApplySet.ID`` computes it, the member label, the
  ``contains-group-kinds`` list and the parent Secret, so kubectl (and prodline's
  prune) see the same set.
* :func:`rendered_digest`: what was applied, as one sha256 over canonical JSON.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from prodline import __version__
from prodline.config.steps import KubernetesPatch
from prodline.config.templates import TemplateError
from prodline.errors import InvalidInput

Obj = dict[str, Any]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

# Helm's InstallOrder, verbatim (helm pkg/release/v1/util/kind_sorter.go).
INSTALL_ORDER: tuple[str, ...] = (
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)
_ORDER = {kind: i for i, kind in enumerate(INSTALL_ORDER)}

# Where each workload kind keeps its pod spec (the ``spec`` of its pod template).
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Rollout": ("spec", "template", "spec"),  # absent with workloadRef: then nothing to set
    "Pod": ("spec",),
}
WORKLOAD_KINDS: frozenset[str] = frozenset(_POD_SPEC_PATHS)
# Kinds whose spec.replicas the ``replicas`` override sets.
SCALABLE_KINDS: frozenset[str] = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "Rollout"})

# ApplySet (KEP-3659) names, as kubectl writes them (pkg/cmd/apply/applyset.go).
PART_OF_LABEL = "applyset.kubernetes.io/part-of"
ID_LABEL = "applyset.kubernetes.io/id"
TOOLING_ANNOTATION = "applyset.kubernetes.io/tooling"
GROUP_KINDS_ANNOTATION = "applyset.kubernetes.io/contains-group-kinds"
NAMESPACES_ANNOTATION = "applyset.kubernetes.io/additional-namespaces"
TOOLING = f"prodline/v{__version__}"  # kubectl writes "kubectl/v1.x.y"


class ManifestError(InvalidInput):
    """A manifest prodline cannot use: the message names the file, the document, the field and the fix."""


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and where it came from: ``k8s/web.yaml#2`` (document 2 of that file)."""

    obj: Obj
    source: str


# --- loading ---------------------------------------------------------------------------------


class _KubectlLoader(yaml.SafeLoader):
    """SafeLoader without timestamp resolution: go-yaml v2 (under kubectl) keeps ``2024-01-01`` a string."""


_KubectlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_manifests(paths: list[str], base: Path) -> list[Manifest]:
    """The objects of ``paths`` (files or folders relative to ``base``), in the order given."""
    root = base.resolve()
    manifests: list[Manifest] = []
    for entry in paths:
        for file in _files(entry, root):
            manifests.extend(_load_file(file, file.relative_to(root).as_posix()))
    check_unique(manifests)
    return manifests


def _files(entry: str, root: Path) -> list[Path]:
    field = f"manifests entry {entry!r}"
    if not entry.strip():
        raise ManifestError(f"{field}: empty path; name a file or folder relative to the service file")
    if Path(entry).is_absolute():
        raise ManifestError(f"{field}: absolute paths are refused; give a path relative to the service file")
    target = (root / entry).resolve()
    if not target.is_relative_to(root):
        raise ManifestError(f"{field}: leaves the service file's folder; keep manifests inside it")
    if not target.exists():
        raise ManifestError(f"{field}: no such file or folder under {root}; check the path")
    if target.is_file():
        return [target]
    files = sorted(
        (p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES),
        key=lambda p: p.relative_to(target).as_posix(),
    )
    for file in files:
        # A symlink inside the folder may point anywhere; the bundle must be self-contained.
        if not file.resolve().is_relative_to(root):
            raise ManifestError(f"{file.relative_to(root).as_posix()}: a link out of the service file's folder")
    if not files:
        raise ManifestError(f"{field}: the folder holds no *.yaml, *.yml or *.json file; add manifests or fix the path")
    return [f.resolve() for f in files]


def _load_file(file: Path, name: str) -> list[Manifest]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{name}: cannot be read ({e})") from None
    if file.suffix.lower() == ".json":
        try:
            documents: list[Any] = [json.loads(text)] if text.strip() else []
        except json.JSONDecodeError as e:
            raise ManifestError(f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    else:
        documents = []
        try:
            for document in yaml.load_all(text, Loader=_KubectlLoader):  # a SafeLoader subclass
                documents.append(document)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e)
            raise ManifestError(
                f"{name}, document {len(documents) + 1}: invalid YAML{where}: {problem}; fix the syntax"
            ) from None
    out: list[Manifest] = []
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue  # an empty document (a stray ``---``), as kubectl skips it
        source = f"{name}#{number}"
        obj = _validated(_normalized(document), source)
        if _is_list(obj):
            out.extend(_list_items(obj, source))
        else:
            out.append(Manifest(obj, source))
    return out


def _list_items(obj: Obj, source: str) -> list[Manifest]:
    items = obj.get("items")
    if not isinstance(items, list):
        raise ManifestError(f"{_where(source)}: a {obj['kind']} needs an items list")
    return [
        Manifest(_validated(item, f"{source} items[{i}]"), f"{source} items[{i}]")
        for i, item in enumerate(items)  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    ]


def _is_list(obj: Obj) -> bool:
    """``List`` or any ``FooList`` with items: kubectl's resource builder flattens both (meta.IsListType)."""
    return obj["kind"] == "List" or (obj["kind"].endswith("List") and isinstance(obj.get("items"), list))


def _where(source: str) -> str:
    """``k8s/web.yaml#2`` as a person reads it: ``k8s/web.yaml, document 2``."""
    name, _, rest = source.rpartition("#")
    return f"{name}, document {rest}" if name else source


def _validated(document: Any, source: str) -> Obj:
    where = _where(source)
    if not isinstance(document, dict):
        raise ManifestError(
            f"{where}: not a Kubernetes object (a {type(document).__name__}); "
            "each document must be a mapping with apiVersion, kind and metadata.name"
        )
    obj: Obj = document  # pyright: ignore[reportUnknownVariableType]
    for field, example in (("apiVersion", "apps/v1"), ("kind", "Deployment")):
        value = obj.get(field)
        if not isinstance(value, str) or not value.strip():
            raise ManifestError(f"{where}: {field} is missing; set it (e.g. {field}: {example})")
    if _is_list(obj):
        return obj  # a List has no name of its own
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise ManifestError(f"{where}: metadata is missing; set metadata.name")
    name = metadata.get("name")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if not isinstance(name, str) or not name.strip():
        hint = " (generateName is not supported by apply)" if "generateName" in metadata else ""
        raise ManifestError(f"{where}: metadata.name is missing{hint}; name the {obj['kind']}")
    return obj


def _normalized(value: Any) -> Any:
    """Mapping keys as strings, as sigs.k8s.io/yaml turns them into JSON (``1: a`` -> ``"1": a``)."""
    if isinstance(value, dict):
        return {_key(k): _normalized(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list):
        return [_normalized(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    return value


def _key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(key)


def object_identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(group, kind, namespace, name): one object, whatever the version it is written in."""
    metadata = obj.get("metadata") or {}
    return (_group(str(obj.get("apiVersion", ""))), str(obj.get("kind", "")), str(metadata.get("namespace") or ""),
            str(metadata.get("name", "")))  # fmt: skip


def check_unique(manifests: Sequence[Manifest]) -> None:
    """Refuse the same object twice (apiVersion group, kind, namespace, name); call again after setting namespaces."""
    seen: dict[tuple[str, str, str, str], str] = {}
    for m in manifests:
        identity = object_identity(m.obj)
        if identity in seen:
            raise ManifestError(
                f"{_where(m.source)}: {object_key(m.obj)} is also defined in {_where(seen[identity])}; "
                "keep one definition of each object"
            )
        seen[identity] = m.source


# --- rendering -------------------------------------------------------------------------------


def render(manifests: Sequence[Manifest], render_text: Callable[[str], str]) -> list[Manifest]:
    """Every string value rendered with ``render_text`` (keys untouched); the input is not changed."""
    out: list[Manifest] = []
    for m in manifests:
        try:
            out.append(Manifest(_render_value(m.obj, render_text, ""), m.source))
        except _RenderFailure as e:
            raise ManifestError(f"{_where(m.source)}: {e.path}: {e.message}") from None
    return out


class _RenderFailure(Exception):
    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


def _render_value(value: Any, render_text: Callable[[str], str], path: str) -> Any:
    if isinstance(value, str):
        try:
            return render_text(value)
        except TemplateError as e:
            raise _RenderFailure(path or "(document)", str(e)) from None
    if isinstance(value, dict):
        return {k: _render_value(v, render_text, _join(path, k)) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list):
        return [_render_value(v, render_text, f"{path}[{i}]") for i, v in enumerate(value)]  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    return value


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# --- overrides -------------------------------------------------------------------------------


def apply_overrides(
    manifests: Sequence[Manifest],
    *,
    images: Mapping[str, str],
    replicas: int | None,
    patches: Sequence[KubernetesPatch],
) -> list[Manifest]:
    """Copies of ``manifests`` with the step's images, replicas and patches set (in that order)."""
    out = [Manifest(copy.deepcopy(m.obj), m.source) for m in manifests]
    if images:
        _set_images(out, images)
    if replicas is not None:
        scaled = [m for m in out if m.obj["kind"] in SCALABLE_KINDS]
        if not scaled:
            raise ManifestError(
                "replicas: the manifests have no Deployment, StatefulSet, ReplicaSet or Rollout to scale; "
                "remove replicas or add the workload"
            )
        for m in scaled:
            m.obj.setdefault("spec", {})["replicas"] = replicas
    for i, patch in enumerate(patches):
        _apply_patch(out, patch, f"patches[{i}]")
    return out


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload's pod template (None: not a workload, or a Rollout with workloadRef)."""
    path = _POD_SPEC_PATHS.get(str(obj.get("kind", "")))
    node: Any = obj
    for key in path or ():
        node = node.get(key) if isinstance(node, dict) else None
    return node if path and isinstance(node, dict) else None  # pyright: ignore[reportUnknownVariableType]


def _containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            if isinstance(c, dict):
                found.append(c)  # pyright: ignore[reportUnknownArgumentType]
    return found


def _set_images(manifests: list[Manifest], images: Mapping[str, str]) -> None:
    names: set[str] = set()
    for m in manifests:
        spec = pod_spec(m.obj)
        for c in _containers(spec) if spec is not None else []:
            name = c.get("name")
            names.add(str(name))
            if isinstance(name, str) and name in images:
                c["image"] = images[name]
    missing = sorted(set(images) - names)
    if missing:
        available = ", ".join(sorted(names)) or "none (no workload has a pod template)"
        raise ManifestError(
            f"images: no container is named {', '.join(missing)}; containers in the manifests: {available}"
        )


_SEGMENT = re.compile(r"^(?P<key>[^\[\]]+)(?:\[(?P<index>\d+)\])?$")


def parse_path(path: str) -> list[str | int]:
    """``a.b[0].c`` -> ``["a", "b", 0, "c"]``."""
    steps: list[str | int] = []
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            raise ManifestError(f"path {path!r}: bad segment {segment!r}; use dotted keys and [N] for list items")
        steps.append(match["key"])
        if match["index"] is not None:
            steps.append(int(match["index"]))
    return steps


def _apply_patch(manifests: list[Manifest], patch: KubernetesPatch, field: str) -> None:
    targets = [m for m in manifests if m.obj["kind"] == patch.kind and patch.name in (None, _name(m.obj))]
    if not targets:
        what = f"{patch.kind} named {patch.name!r}" if patch.name else f"{patch.kind}"
        same_kind = sorted(_name(m.obj) for m in manifests if m.obj["kind"] == patch.kind)
        known = f"{patch.kind} objects: {', '.join(same_kind)}" if same_kind else (
            "kinds in the manifests: " + ", ".join(sorted({str(m.obj["kind"]) for m in manifests})))  # fmt: skip
        raise ManifestError(f"{field}: no {what} in the manifests ({known}); fix kind or name")
    steps = parse_path(patch.path)
    for m in targets:
        try:
            _set_path(m.obj, steps, patch.value)
        except _PathError as e:
            raise ManifestError(f"{field}: {patch.path} in {_where(m.source)}: {e}") from None


class _PathError(Exception):
    pass


def _set_path(obj: Obj, steps: list[str | int], value: Any) -> None:
    node: Any = obj
    for depth, step in enumerate(steps[:-1]):
        nxt = steps[depth + 1]
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):  # pyright: ignore[reportUnknownArgumentType]
                raise _PathError(f"no item [{step}] at {_format(steps[: depth + 1])}")
            child = node[step]  # pyright: ignore[reportUnknownVariableType]
        else:
            if not isinstance(node, dict):
                raise _PathError(f"{_format(steps[:depth])} is not a mapping")
            child = node.get(step)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            if child is None:
                if value is None:
                    return  # removing a field under a missing map: nothing to remove
                if isinstance(nxt, int):
                    raise _PathError(f"no list at {_format(steps[: depth + 1])}")
                child = node[step] = {}  # missing maps are created
        node = child  # pyright: ignore[reportUnknownVariableType]
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):  # pyright: ignore[reportUnknownArgumentType]
            raise _PathError(f"no item [{last}] at {_format(steps)}")
        if value is None:
            del node[last]
        else:
            node[last] = value
    elif not isinstance(node, dict):
        raise _PathError(f"{_format(steps[:-1])} is not a mapping")
    elif value is None:
        node.pop(last, None)  # pyright: ignore[reportUnknownMemberType]
    else:
        node[last] = value


def _format(steps: Sequence[str | int]) -> str:
    out = ""
    for s in steps:
        out = f"{out}[{s}]" if isinstance(s, int) else _join(out, s)
    return out or "(object)"


# --- identity and order ----------------------------------------------------------------------


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def object_key(obj: Mapping[str, Any]) -> str:
    """``apps/v1 Deployment shop/web``; a cluster-scoped object (no namespace): ``v1 Namespace shop``."""
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = f"{namespace}/{metadata.get('name', '')}" if namespace else str(metadata.get("name", ""))
    return f"{obj.get('apiVersion', '')} {obj.get('kind', '')} {name}"


T = TypeVar("T", Manifest, Obj)


def _kind_of(item: Manifest | Obj) -> str:
    return str(item.obj["kind"] if isinstance(item, Manifest) else item.get("kind", ""))


def install_order(objs: Iterable[T]) -> list[T]:
    """Helm's install order; unknown kinds last, by kind name; equal kinds keep their order."""

    def rank(item: T) -> tuple[int, int, str]:
        kind = _kind_of(item)
        return (0, _ORDER[kind], "") if kind in _ORDER else (1, 0, kind)

    return sorted(objs, key=rank)  # sorted() is stable, as Helm's sort.SliceStable


# --- ApplySet (KEP-3659) ---------------------------------------------------------------------


def applyset_id(name: str, namespace: str, kind: str = "Secret", group: str = "") -> str:
    """The ApplySet ID of a parent, as kubectl's ``ApplySet.ID``: a valid label value."""
    unencoded = ".".join((name, namespace, kind, group))
    digest = hashlib.sha256(unencoded.encode()).digest()
    return "applyset-" + base64.urlsafe_b64encode(digest).decode().rstrip("=") + "-v1"


def label_members(objs: Iterable[Mapping[str, Any]], applyset: str) -> list[Obj]:
    """Copies of ``objs`` with the member label ``applyset.kubernetes.io/part-of=<applyset>``."""
    out: list[Obj] = []
    for obj in objs:
        labelled = copy.deepcopy(dict(obj))
        metadata = labelled.setdefault("metadata", {})
        labels = metadata.get("labels") or {}
        metadata["labels"] = {**labels, PART_OF_LABEL: applyset}
        out.append(labelled)
    return out


def group_kind(obj: Mapping[str, Any]) -> str:
    """``Deployment.apps``; the core group has no suffix (``ConfigMap``), as Go's GroupKind.String."""
    group = _group(str(obj.get("apiVersion", "")))
    return f"{obj.get('kind', '')}.{group}" if group else str(obj.get("kind", ""))


def group_kinds(objs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The distinct group-kinds, sorted, as the ``contains-group-kinds`` annotation lists them."""
    return sorted({group_kind(o) for o in objs})


def parent_secret(
    name: str,
    namespace: str,
    id: str,  # the KEP's name for it
    group_kinds: Sequence[str],
    tooling: str = TOOLING,
    additional_namespaces: Sequence[str] = (),
) -> Obj:
    """The ApplySet parent Secret kubectl would write: the ID label, tooling and kinds annotations."""
    annotations = {TOOLING_ANNOTATION: tooling, GROUP_KINDS_ANNOTATION: ",".join(sorted(set(group_kinds)))}
    extra = sorted(set(additional_namespaces) - {namespace})
    if extra:
        annotations[NAMESPACES_ANNOTATION] = ",".join(extra)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {ID_LABEL: id}, "annotations": annotations},
    }


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces (what digests are taken over)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def rendered_digest(objs: Sequence[Mapping[str, Any]]) -> str:
    """``sha256:<hex>`` of the objects' canonical JSON, in the order given."""
    return "sha256:" + hashlib.sha256(canonical_json(list(objs)).encode()).hexdigest()
