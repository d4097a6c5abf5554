"""Thin adapters over a cluster's ``DynamicClient``: plain dicts in and out, Temporal errors out.

Every call is blocking (the client is synchronous): runners call these in a
thread. Errors become :class:`~temporalio.exceptions.ApplicationError`, the
way Temporal should treat them:

- 4xx answers (invalid, forbidden, not found where it must exist, a conflict
  even after forcing) and kinds the cluster does not know are non-retryable
  (``ConfigurationError``), with the API server's own message and the object;
- 5xx, 429 and connection failures are retryable (``KubernetesUnavailable``):
  Temporal tries again with the step's retry policy.

A Secret's values never reach a message: the server may echo an invalid value.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError
from kubernetes.dynamic.resource import Resource, ResourceList
from temporalio.exceptions import ApplicationError

from prodline.contracts import NON_RETRYABLE_CONFIG

from ..process import redact
from .cluster import UNAVAILABLE, Cluster
from .manifests import object_key

FIELD_MANAGER = "prodline"
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = 30.0  # seconds per request: a hung API server is a retryable failure, not a hung step

Obj = dict[str, Any]


class Api:
    """One cluster, as one step uses it: ``namespace`` is where namespaced objects that name none go."""

    def __init__(self, cluster: Cluster, namespace: str, timeout: float = REQUEST_TIMEOUT):
        self.cluster = cluster
        self.namespace = namespace
        self.timeout = timeout

    # --- discovery --------------------------------------------------------------------------

    def resource_for(self, obj: Obj) -> Resource:
        """The API resource of ``obj``'s kind; an unknown kind is a config error (a CRD not installed?)."""
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        with self.errors(obj), self.cluster.lock:
            try:
                return self.cluster.client.resources.get(api_version=api_version, kind=kind)
            except (ResourceNotFoundError, ResourceNotUniqueError):
                raise ApplicationError(
                    f"{object_key(obj)}: the cluster {self.cluster.name} has no kind {kind} in {api_version}: "
                    "is its CRD installed? (put the CRD in the manifests, or install it first)",
                    type=NON_RETRYABLE_CONFIG,
                    non_retryable=True,
                ) from None

    def known(self, obj: Obj) -> bool:
        """Whether the cluster serves ``obj``'s kind (without re-discovering on a miss)."""
        try:
            self.resource_for(obj)
        except ApplicationError as exc:
            if exc.type == NON_RETRYABLE_CONFIG:
                return False
            raise
        return True

    def placed(self, obj: Obj) -> Obj:
        """``obj`` with its namespace as the cluster will see it: the step's for namespaced kinds
        that name none, none at all for cluster-scoped kinds (a stray one would be refused)."""
        resource = self.resource_for(obj)
        meta = dict(obj.get("metadata") or {})
        if resource.namespaced:
            meta.setdefault("namespace", self.namespace)
            if not meta["namespace"]:
                meta["namespace"] = self.namespace
        else:
            meta.pop("namespace", None)
        return {**obj, "metadata": meta}

    # --- reads ------------------------------------------------------------------------------

    def get(self, obj: Obj) -> Obj | None:
        """The live object ``obj`` names, or None when there is none."""
        resource, placed = self._target(obj)
        with self.errors(obj, missing_ok=True) as missing:
            found = self.cluster.client.get(
                resource, name=_name(placed), namespace=_ns(resource, placed), _request_timeout=self.timeout
            )
            return found.to_dict()
        assert missing
        return None

    def list(self, api_version: str, kind: str, label_selector: str, namespace: str | None = None) -> list[Obj]:
        """Every object of a kind carrying the labels, in ``namespace`` (None: everywhere)."""
        probe: Obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "*"}}
        resource = self.resource_for(probe)
        with self.errors(probe):
            found = self.cluster.client.get(
                resource,
                namespace=namespace if resource.namespaced else None,
                label_selector=label_selector,
                _request_timeout=self.timeout,
            ).to_dict()
        items = found.get("items") or []
        # List items carry no apiVersion/kind: put them back so each names itself.
        return [{"apiVersion": api_version, "kind": kind, **item} for item in items]

    def served_version(self, group_kind: str) -> tuple[str, bool] | None:
        """``Deployment.apps`` -> (``apps/v1``, namespaced), the group's preferred version the
        cluster serves the kind in; None when it serves it in none (its CRD is gone)."""
        kind, _, group = group_kind.partition(".")
        # What an error names (object_key): "discovery of kind Deployment.apps: ...".
        probe: Obj = {"apiVersion": "discovery of", "kind": "kind", "metadata": {"name": group_kind}}
        with self.errors(probe), self.cluster.lock:
            try:
                found = self.cluster.client.resources.search(kind=kind)
            except ResourceNotFoundError:
                return None
        matches = [r for r in found if (r.group or "") == group and not isinstance(r, ResourceList)]
        if not matches:
            return None
        best = next((r for r in matches if r.preferred), matches[0])
        return best.group_version, bool(best.namespaced)

    # --- writes -----------------------------------------------------------------------------

    def apply(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Server-side apply as field manager ``prodline``, conflicts forced (we own these fields)."""
        resource, body = self._target(obj)
        with self.errors(obj):
            result = self.cluster.client.server_side_apply(
                resource,
                body=body,
                name=_name(body),
                namespace=_ns(resource, body),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                dry_run="All" if dry_run else None,
                _request_timeout=self.timeout,
            )
        return result.to_dict()

    def delete(self, obj: Obj, *, uid: str | None = None) -> bool:
        """Delete ``obj`` (False: it was already gone); with ``uid``, only that very object (a
        precondition: another object of that name is a 409)."""
        resource, placed = self._target(obj)
        body = {"preconditions": {"uid": uid}} if uid else None
        with self.errors(obj, missing_ok=True) as missing:
            self.cluster.client.delete(
                resource,
                name=_name(placed),
                namespace=_ns(resource, placed),
                body=body,
                _request_timeout=self.timeout,
            )
            return True
        assert missing
        return False

    def merge_patch(self, obj: Obj, patch: Obj, *, status: bool = False) -> Obj:
        """A JSON merge patch of ``obj`` (its status subresource with ``status``)."""
        resource, placed = self._target(obj)
        path = resource.path(name=_name(placed), namespace=_ns(resource, placed)) + ("/status" if status else "")
        with self.errors(obj):
            answer = self.cluster.client.request(
                "patch", path, body=patch, content_type=MERGE_PATCH, _request_timeout=self.timeout
            )
        return answer.to_dict()

    def _target(self, obj: Obj) -> tuple[Resource, Obj]:
        return self.resource_for(obj), self.placed(obj)

    # --- errors -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def errors(self, obj: Obj, *, missing_ok: bool = False) -> Iterator[list[bool]]:
        """Map the client's failures for ``obj``; with ``missing_ok`` a 404 sets the yielded flag
        and is swallowed (the block's own return is skipped: the caller returns the default)."""
        missing: list[bool] = []
        try:
            yield missing
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                missing.append(True)
                return
            raise api_error(exc, obj, self.cluster.name) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApplicationError(
                f"{object_key(obj)}: cannot reach the cluster {self.cluster.name}: {exc}", type=UNAVAILABLE
            ) from None


def api_error(exc: ApiException, obj: Obj, cluster: str) -> ApplicationError:
    """The API server's answer as Temporal should treat it (4xx: fix the manifests; else: retry)."""
    status = exc.status or 0
    message = redact(server_message(exc), secret_values(obj))
    text = f"{object_key(obj)}: {message} (HTTP {status} from {cluster})"
    # The status goes in the details, so a caller can tell a 409 (re-read and retry) apart.
    if status == 429 or status >= 500 or status == 0:  # 0: the client's own transport failure
        return ApplicationError(text, status, type=UNAVAILABLE)
    return ApplicationError(text, status, type=NON_RETRYABLE_CONFIG, non_retryable=True)


def http_status(exc: ApplicationError) -> int | None:
    """The HTTP status an :func:`api_error` came from, if it came from one."""
    return exc.details[0] if exc.details and isinstance(exc.details[0], int) else None


def server_message(exc: ApiException) -> str:
    """The ``message`` of the Status the server answered with, else its reason."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if body:
        try:
            status = json.loads(body)
        except ValueError:
            return str(body)[:500]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(exc.reason or "no reason given")


def secret_values(obj: Obj) -> list[str]:
    """A Secret's values (and their base64 forms) to keep out of messages."""
    if obj.get("kind") != "Secret":
        return []
    values: list[str] = []
    for name in ("data", "stringData"):
        for value in (obj.get(name) or {}).values():
            if isinstance(value, str) and value:
                values.append(value)
                if name == "data":
                    with contextlib.suppress(ValueError):
                        values.append(base64.b64decode(value).decode("utf-8", "replace"))
                else:
                    values.append(base64.b64encode(value.encode()).decode())
    return values


def _name(obj: Obj) -> str:
    return (obj.get("metadata") or {})["name"]


def _ns(resource: Resource, obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("namespace") if resource.namespaced else None
