"""The resource types the fake API server knows, their discovery documents, defaults and validation.

Built in: core v1 namespaces (cluster-scoped), configmaps, secrets, services,
serviceaccounts; apps/v1 deployments, statefulsets, daemonsets; apiextensions.k8s.io/v1
customresourcedefinitions (cluster-scoped). Every stored CustomResourceDefinition whose
``Established`` condition is True adds its versions' resources (:func:`crd_types`).

Defaults are the ones a client can see in an apply result (kubernetes
``pkg/apis/apps/v1/defaults.go``), not all of them: no pod-spec defaults
(``terminationMessagePath``, ``imagePullPolicy``, ``dnsPolicy`` ...), no Service
``clusterIP``. Validation is only what the tests need: a name, kind and apiVersion
matching the URL, and a workload's ``spec.selector`` and ``spec.template``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]


@dataclass(frozen=True)
class ResourceType:
    """One API resource: where it lives in the URL space and how it behaves."""

    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    status_subresource: bool
    builtin: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``deployments.apps``: how the real server names the type in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind_group(self) -> str:
        """``Deployment.apps``: how the real server names the kind in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def discovery(self) -> list[dict[str, Any]]:
        """APIResourceList entries: the resource, and ``x/status`` when it has the subresource."""
        entries = [
            {
                "name": self.plural,
                "singularName": self.singular,
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ALL_VERBS,
            }
        ]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": STATUS_VERBS,
                }
            )
        return entries


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "namespace", "Namespace", False, True),
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True, False),
    ResourceType("", "v1", "secrets", "secret", "Secret", True, False),
    ResourceType("", "v1", "services", "service", "Service", True, True),
    ResourceType("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, False),
    ResourceType("apps", "v1", "deployments", "deployment", "Deployment", True, True),
    ResourceType("apps", "v1", "statefulsets", "statefulset", "StatefulSet", True, True),
    ResourceType("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, True),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        False,
        True,
    ),
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Rollout")

# The Argo Rollouts CRD as `kubectl apply -f install.yaml` creates it, trimmed to what
# discovery reads (no openAPIV3Schema: the fake does not validate custom resources).
ROLLOUT_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "rollouts.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "names": {
            "kind": "Rollout",
            "listKind": "RolloutList",
            "plural": "rollouts",
            "singular": "rollout",
            "shortNames": ["ro"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                "subresources": {"status": {}},
            }
        ],
    },
}

KNOWN_CRDS: dict[str, dict[str, Any]] = {"rollouts.argoproj.io": ROLLOUT_CRD}


def crd_established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    plural, kind, group = names.get("plural"), names.get("kind"), spec.get("group")
    if not (plural and kind and group):
        return []
    return [
        ResourceType(
            group=group,
            version=version["name"],
            plural=plural,
            singular=names.get("singular") or kind.lower(),
            kind=kind,
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            status_subresource="status" in (version.get("subresources") or {}),
            builtin=False,
        )
        for version in spec.get("versions") or []
        if version.get("name") and version.get("served", True)
    ]


def _setdefault_path(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = obj
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node.setdefault(path[-1], value)


def apply_defaults(obj: dict[str, Any]) -> None:
    """Fill the defaults the real server fills on every write (so an unset field comes back)."""
    kind = obj.get("kind")
    spec = obj.get("spec")
    if kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("revisionHistoryLimit", 10)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            _setdefault_path(strategy, ("rollingUpdate", "maxSurge"), "25%")
            _setdefault_path(strategy, ("rollingUpdate", "maxUnavailable"), "25%")
    elif kind == "StatefulSet" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("revisionHistoryLimit", 10)
        strategy = spec.setdefault("updateStrategy", {})
        # SetDefaults_StatefulSet: rollingUpdate{partition: 0} only when the type was empty,
        # which is why kubectl's status check differs for an explicit `type: RollingUpdate`.
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
            strategy.setdefault("rollingUpdate", {})
        if strategy["type"] == "RollingUpdate" and isinstance(strategy.get("rollingUpdate"), dict):
            strategy["rollingUpdate"].setdefault("partition", 0)
    elif kind == "DaemonSet" and isinstance(spec, dict):
        spec.setdefault("revisionHistoryLimit", 10)
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            _setdefault_path(strategy, ("rollingUpdate", "maxUnavailable"), 1)
            _setdefault_path(strategy, ("rollingUpdate", "maxSurge"), 0)
    elif kind == "Service" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})


def validation_errors(rtype: ResourceType, obj: dict[str, Any]) -> list[str]:
    """Field errors (``field: Required value``), as the real server lists them in an Invalid Status."""
    errors: list[str] = []
    if not (obj.get("metadata") or {}).get("name"):
        errors.append("metadata.name: Required value: name or generateName is required")
    if rtype.kind in WORKLOAD_KINDS:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        if not spec.get("selector"):
            errors.append("spec.selector: Required value")
        if not spec.get("template") and not (rtype.kind == "Rollout" and spec.get("workloadRef")):
            errors.append("spec.template: Required value")
    if rtype.kind == "CustomResourceDefinition":
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        for field, value in (
            ("spec.group", spec.get("group")),
            ("spec.names.plural", names.get("plural")),
            ("spec.names.kind", names.get("kind")),
        ):
            if not value:
                errors.append(f"{field}: Required value")
        if not spec.get("versions"):
            errors.append("spec.versions: Required value")
        expected = f"{names.get('plural')}.{spec.get('group')}"
        name = (obj.get("metadata") or {}).get("name")
        if name and names.get("plural") and spec.get("group") and name != expected:
            errors.append(f'metadata.name: Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
    return errors
