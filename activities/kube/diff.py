"""The plan of a Kubernetes step: what a server-side apply would change, object by object, field by field.

Follows ``kubectl diff --server-side`` (kubectl ``pkg/cmd/diff/diff.go``): LIVE is
the object as read (None when it does not exist), MERGED is the answer of a
server-side apply with ``dryRun=All`` (None for an object to prune). Before
comparing, both lose what the server writes on its own (:func:`strip_server_fields`:
``status``, ``managedFields`` (kubectl drops these too), ``resourceVersion``,
``generation``, ``uid``, timestamps, and the revision annotations the Deployment
and Rollout controllers set), and v1 Secrets are masked exactly as kubectl's
``Masker`` does (:func:`mask_secrets`), so no secret value reaches a plan, a
log or a digest.

Where kubectl hands two YAML trees to ``diff -u``, prodline compares leaves
(:func:`diff_object`): a :class:`FieldChange` per changed scalar, lists by
index, a missing side shown as None. That gives the per-field "before -> after"
lines of :func:`describe` and a stable structure for :func:`diff_digest`, the
digest an approval signs and that apply compares with a fresh dry-run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..process import redact

Obj = dict[str, Any]
Action = Literal["create", "update", "unchanged", "prune"]

# Metadata the API server sets (kubectl diff shows them; a plan would only be noise, and
# resourceVersion/generation change on every write, which would make every plan stale).
SERVER_METADATA = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink",
                   "deletionTimestamp")  # fmt: skip
# Annotations controllers write: the Deployment controller's revision counter, Argo Rollouts' one.
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision", "rollout.argoproj.io/revision")

# kubectl's Masker (pkg/cmd/diff/diff.go).
MASK, MASK_BEFORE, MASK_AFTER = "***", "*** (before)", "*** (after)"
# Client-side `kubectl apply` copies the whole Secret, data included, into this annotation.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

VALUE_WIDTH = 80  # longer values are shortened in describe(), with a hash of all of it
HASH_WIDTH = 12


def strip_server_fields(obj: Mapping[str, Any]) -> Obj:
    """A copy of ``obj`` without status and the metadata the server sets."""
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        for key in SERVER_METADATA:
            metadata.pop(key, None)  # pyright: ignore[reportUnknownMemberType]
        annotations = metadata.get("annotations")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if isinstance(annotations, dict):
            for key in SERVER_ANNOTATIONS:
                annotations.pop(key, None)  # pyright: ignore[reportUnknownMemberType]
            if not annotations:
                del metadata["annotations"]  # only server annotations: as if none
    return out


def _is_secret(obj: Mapping[str, Any] | None) -> bool:
    return obj is not None and obj.get("apiVersion") == "v1" and obj.get("kind") == "Secret"


def _mask_pair(before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    """kubectl's Masker.run over one map of both sides, in place."""
    before = before if before is not None else {}
    after = after if after is not None else {}
    for key in list(before):
        if key in after:
            if before[key] != after[key]:
                before[key], after[key] = MASK_BEFORE, MASK_AFTER
                continue
            after[key] = MASK
        before[key] = MASK
    for key in list(after):
        if key not in before:
            after[key] = MASK


def _map_at(obj: Obj | None, *path: str) -> dict[str, Any] | None:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None  # pyright: ignore[reportUnknownVariableType]


def mask_secrets(live: Mapping[str, Any] | None, merged: Mapping[str, Any] | None) -> tuple[Obj | None, Obj | None]:
    """Copies with v1 Secret values masked: ``***`` when equal, ``*** (before)``/``*** (after)`` when not.

    kubectl masks ``data``; ``stringData`` (write-only, but present in a dry-run answer)
    and the client-side last-applied annotation hold the same values, so they are masked too.
    """
    a = copy.deepcopy(dict(live)) if live is not None else None
    b = copy.deepcopy(dict(merged)) if merged is not None else None
    if not (_is_secret(a) or _is_secret(b)):
        return a, b
    for name in ("data", "stringData"):
        _mask_pair(_map_at(a, name), _map_at(b, name))
    _mask_last_applied(a, b)
    return a, b


def _mask_last_applied(a: Obj | None, b: Obj | None) -> None:
    """The last-applied annotation of a Secret is one opaque value: masked like one data key."""
    annotations = [_map_at(a, "metadata", "annotations"), _map_at(b, "metadata", "annotations")]
    pair = [{LAST_APPLIED: m[LAST_APPLIED]} if m is not None and LAST_APPLIED in m else {} for m in annotations]
    _mask_pair(pair[0], pair[1])
    for masked, target in zip(pair, annotations, strict=True):
        if target is not None and masked:
            target[LAST_APPLIED] = masked[LAST_APPLIED]


@dataclass(frozen=True)
class FieldChange:
    """One changed leaf: ``spec.replicas`` 2 -> 3; None on the side where the field is missing."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class ObjectDiff:
    """What applying one object does: ``apps/v1 Deployment shop/web``, the action, the changed leaves."""

    key: str
    action: Action
    changes: list[FieldChange] = field(default_factory=lambda: [])


_MISSING: Any = object()
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_/-]+$")


def _child(path: str, key: str) -> str:
    part = key if _PLAIN_KEY.match(key) else f"[{json.dumps(key)}]"  # an annotation key with dots stays readable
    if part.startswith("["):
        return f"{path}{part}"
    return f"{path}.{part}" if path else part


def _as_map(value: Any) -> dict[str, Any] | None:
    """A mapping side of a comparison ({} for a missing side), None when it is no mapping."""
    if value is _MISSING:
        return {}
    return value if isinstance(value, dict) else None  # pyright: ignore[reportUnknownVariableType]


def _as_list(value: Any) -> list[Any] | None:
    if value is _MISSING:
        return []
    return value if isinstance(value, list) else None  # pyright: ignore[reportUnknownVariableType]


def _leaves(before: Any, after: Any, path: str, out: list[FieldChange]) -> None:
    """Append the changed leaves below ``path``; an empty map or list counts as a leaf value."""
    if before is _MISSING and after is _MISSING:
        return
    b, a = _as_map(before), _as_map(after)
    if b is not None and a is not None and (b or a):
        for key in sorted(set(b) | set(a)):
            _leaves(b.get(key, _MISSING), a.get(key, _MISSING), _child(path, key), out)
        return
    bl, al = _as_list(before), _as_list(after)
    if bl is not None and al is not None and (bl or al):
        for i in range(max(len(bl), len(al))):
            _leaves(bl[i] if i < len(bl) else _MISSING, al[i] if i < len(al) else _MISSING, f"{path}[{i}]", out)
        return
    if before is _MISSING or after is _MISSING or before != after or type(before) is not type(after):
        out.append(FieldChange(path, None if before is _MISSING else before, None if after is _MISSING else after))


def drop_allocated(obj: Obj) -> None:
    """Values the server allocates anew on every create, a dry-run's too, so a plan would never
    match a later dry-run, nor what an apply created (in place).

    A new Service's ClusterIP is picked at random (``None``, a headless Service, is the user's and
    stays), and so are its node ports (NodePort and LoadBalancer Services).
    """
    if obj.get("apiVersion") == "v1" and obj.get("kind") == "Service":
        spec: Any = obj.get("spec")
        if not isinstance(spec, dict):
            return
        if spec.get("clusterIP") != "None":  # pyright: ignore[reportUnknownMemberType]
            spec.pop("clusterIP", None)  # pyright: ignore[reportUnknownMemberType]
            spec.pop("clusterIPs", None)  # pyright: ignore[reportUnknownMemberType]
        spec.pop("healthCheckNodePort", None)  # pyright: ignore[reportUnknownMemberType]
        for port in spec.get("ports") or []:  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            if isinstance(port, dict):
                port.pop("nodePort", None)  # pyright: ignore[reportUnknownMemberType]


def diff_object(key: str, live: Mapping[str, Any] | None, merged: Mapping[str, Any] | None) -> ObjectDiff:
    """The diff of one object: ``live`` None is a create, ``merged`` None a prune."""
    if live is None and merged is None:
        raise ValueError(f"{key}: neither a live nor a merged object")
    a, b = mask_secrets(
        strip_server_fields(live) if live is not None else None,
        strip_server_fields(merged) if merged is not None else None,
    )
    if a is None and b is not None:
        drop_allocated(b)
    changes: list[FieldChange] = []
    _leaves(a if a is not None else _MISSING, b if b is not None else _MISSING, "", changes)
    if a is None:
        return ObjectDiff(key, "create", changes)
    if b is None:
        return ObjectDiff(key, "prune", changes)
    return ObjectDiff(key, "update" if changes else "unchanged", changes)


_SIGNS: dict[str, str] = {"create": "+", "update": "~", "prune": "-"}


def _value(value: Any, masks: Sequence[str]) -> str:
    """A value for humans: masked first (a cut secret would escape the mask), then cut to
    VALUE_WIDTH with the SHA-256 of the whole (masked) text, so two long values that differ
    after the cut are seen to differ."""
    text = json.dumps(_masked(value, masks), ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)
    if len(text) <= VALUE_WIDTH:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:HASH_WIDTH]
    return f"{text[: VALUE_WIDTH - 3]}... (sha256:{digest})"


def _masked(value: Any, masks: Sequence[str]) -> Any:
    """``value`` with every string in it masked (before JSON escapes would hide a secret)."""
    if not masks:
        return value
    if isinstance(value, str):
        return redact(value, masks)
    if isinstance(value, list):
        return [_masked(v, masks) for v in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return {k: _masked(v, masks) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    return value


def describe(diffs: Sequence[ObjectDiff], masks: Sequence[str] = ()) -> tuple[str, str]:
    """(summary, text): counts per action, then each object that changes with its fields.

    An update lists ``path: before -> after`` (``(none)`` for a missing side), a create
    its fields, a prune only its key; unchanged objects are only counted. ``masks`` (an
    earlier step's sensitive outputs the manifests rendered) never show.
    """
    counts = {
        action: sum(1 for d in diffs if d.action == action) for action in ("create", "update", "prune", "unchanged")
    }
    summary = (f"{counts['create']} to create, {counts['update']} to update, {counts['prune']} to prune, "
               f"{counts['unchanged']} unchanged")  # fmt: skip
    lines: list[str] = []
    for d in diffs:
        if d.action == "unchanged":
            continue
        lines.append(f"{_SIGNS[d.action]} {d.key}")
        if d.action == "prune":
            continue
        for change in d.changes:
            if d.action == "create":
                lines.append(f"    {change.path}: {_value(change.after, masks)}")
            else:
                before = "(none)" if change.before is None else _value(change.before, masks)
                after = "(none)" if change.after is None else _value(change.after, masks)
                lines.append(f"    {change.path}: {before} -> {after}")
    return summary, "\n".join(lines)


def digest_input(diffs: Sequence[ObjectDiff]) -> str:
    """The canonical JSON of the diffs (sorted keys, no spaces) that :func:`diff_digest` hashes."""
    return json.dumps(
        [asdict(d) for d in diffs], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def diff_digest(diffs: Sequence[ObjectDiff]) -> str:
    """``sha256:<hex>`` of :func:`digest_input` (masked values only): what an approval signs."""
    return "sha256:" + hashlib.sha256(digest_input(diffs).encode()).hexdigest()
