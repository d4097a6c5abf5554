"""FakeCluster: an in-process Kubernetes API server over HTTP on 127.0.0.1, for the real ``kubernetes`` client.

See the package docstring (``tests/kubeapi/__init__.py``) for what it implements and how it
differs from a real API server. Layout: this module holds the store and the HTTP protocol;
``resources`` the types, discovery, defaults and validation; ``merge`` the patch algorithms;
``controller`` the status writers.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from .controller import Controllers, now
from .merge import PatchError, apply_config, json_patch, merge_patch
from .resources import (
    BUILTIN_TYPES,
    KNOWN_CRDS,
    ResourceType,
    apply_defaults,
    crd_established,
    crd_types,
    validation_errors,
)

Key = tuple[str, str, str, str]  # (group, plural, namespace or "", name)

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
CONFLICT_MESSAGE = "the object has been modified; please apply your changes to the latest version and try again"
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


@dataclass
class Request:
    """One request the server received (discovery included), in arrival order."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any  # parsed JSON (or YAML), None without a body
    dry_run: bool


class ApiError(Exception):
    """An error answer: a ``Status`` object with ``code``."""

    def __init__(self, code: int, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass
class _Injection:
    method: str
    path_contains: str
    status: int
    message: str
    times: int


@dataclass
class _Target:
    """What a URL names: a type, a namespace, maybe an object, maybe its status."""

    rtype: ResourceType
    namespace: str  # "" for cluster-scoped types, or a list across all namespaces
    name: str = ""
    status: bool = False

    def key(self, name: str | None = None) -> Key:
        return (self.rtype.group, self.rtype.plural, self.namespace, name or self.name)


def _not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        f'{rtype.group_resource} "{name}" not found',
        details={"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def _invalid(rtype: ResourceType, name: str, errors: list[str]) -> ApiError:
    return ApiError(
        422,
        f'{rtype.kind_group} "{name}" is invalid: {", ".join(errors)}',
        details={
            "name": name,
            "group": rtype.group,
            "kind": rtype.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": e, "field": e.split(":", 1)[0]} for e in errors],
        },
    )


def _fields_v1(config: Any) -> dict[str, Any]:
    """A managedFields ``fieldsV1`` set for a configuration (lists are one field each, not per item)."""
    if isinstance(config, dict):
        return {f"f:{k}": _fields_v1(v) for k, v in config.items() if k not in ("apiVersion", "kind")}
    return {}


def _without_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The object minus what the server writes (to tell a real change from a no-op)."""
    result = copy.deepcopy(obj)
    meta = result.get("metadata") or {}
    for key in ("resourceVersion", "managedFields"):
        meta.pop(key, None)
    return result


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    result = dict(obj)
    result["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return result


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything outside metadata and status: what ``generation`` counts."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


_SELECTOR_TERM = re.compile(
    r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([^,\s]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$"
)


def _split_selector(selector: str) -> list[str]:
    """Split on the commas outside parentheses (``a in (x,y),b`` is two terms)."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t for t in terms if t.strip()]


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality (``a=b``, ``a==b``, ``a!=b``), existence (``a``, ``!a``) and set (``a in (x,y)``, ``notin``) terms."""
    for term in _split_selector(selector):
        match = _SELECTOR_TERM.match(term)
        if not match:
            raise ApiError(400, f"unable to parse requirement: {term!r}")
        negate, key, op, value, set_op, values = match.groups()
        if set_op:
            options = {v.strip() for v in values.split(",")}
            if (labels.get(key) in options) != (set_op == "in") or (set_op == "in" and key not in labels):
                return False
        elif op in ("=", "=="):
            if labels.get(key) != value:
                return False
        elif op == "!=":
            if labels.get(key) == value:
                return False
        elif (key in labels) == bool(negate):
            return False
    return True


class FakeCluster:
    """A fake Kubernetes API server (see the package docstring); use it as a context manager.

    ``ready_after``/``deadline_after``/``crd_established_after`` are controller ticks (GETs of
    the object, see ``controller``); an image containing one of ``broken_images`` never gets
    ready; ``preinstalled_crds`` names CRDs that exist, established, from the start (known:
    ``rollouts.argoproj.io``).
    """

    def __init__(
        self,
        *,
        ready_after: int = 2,
        deadline_after: int = 5,
        crd_established_after: int = 1,
        broken_images: Iterable[str] = ("bad",),
        preinstalled_crds: Iterable[str] = (),
    ):
        self.controllers = Controllers(
            ready_after=ready_after,
            deadline_after=deadline_after,
            crd_established_after=crd_established_after,
            broken_images=broken_images,
        )
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._applied: dict[Key, dict[str, dict[str, Any]]] = {}  # key -> manager -> last applied config
        self._injections: list[_Injection] = []
        self._rv = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        for name in preinstalled_crds:
            if name not in KNOWN_CRDS:
                raise ValueError(f"unknown preinstalled CRD {name!r}; known: {', '.join(sorted(KNOWN_CRDS))}")
            crd = self.put(copy.deepcopy(KNOWN_CRDS[name]))
            self._store(self._key_of(crd), self.controllers.establish(crd))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeCluster:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.cluster = self  # type: ignore[attr-defined]  # the handler's way back to the store
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.02,), name="fake-kube-apiserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, path: Path, context: str = "fake", namespace: str = "default") -> Path:
        """Write a kubeconfig (no auth, ``server: url``) whose current-context is ``context``."""
        if not self.url:
            raise RuntimeError("start the FakeCluster (use it as a context manager) before writing its kubeconfig")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
            "current-context": context,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- test helpers ---------------------------------------------------------------------------

    def count(
        self,
        method: str | None = None,
        *,
        path_contains: str = "",
        dry_run: bool | None = None,
        content_type: str = "",
    ) -> int:
        """How many logged requests match (``method`` exactly, the others as substrings; dry_run when given)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method.upper())
                and path_contains in r.path
                and (dry_run is None or r.dry_run == dry_run)
                and content_type in r.content_type
            )

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = "default") -> dict[str, Any] | None:
        """The stored object (a deep copy), or None; never ticks a controller."""
        with self._lock:
            rtype = self._type_by_kind(api_version, kind)
            obj = self._objects.get(self._key(rtype, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every stored object (deep copies, in key order), or those of one kind."""
        with self._lock:
            return [copy.deepcopy(o) for k, o in sorted(self._objects.items()) if kind is None or o.get("kind") == kind]

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store or replace ``obj`` directly, as if someone else made it (drift, leftovers).

        Server fields are set (uid, resourceVersion, generation, creationTimestamp) and defaults
        filled; ``status`` is kept as given. The namespace need not exist.
        """
        with self._lock:
            obj = copy.deepcopy(obj)
            rtype = self._type_by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
            meta = obj.setdefault("metadata", {})
            if rtype.namespaced:
                meta.setdefault("namespace", "default")
            key = self._key(rtype, meta.get("namespace"), meta["name"])
            old = self._objects.get(key)
            stored = self._finish(rtype, old, obj, manager="fake-put", operation="Update", subresource="")
            stored = self.controllers.after_write(stored)
            self._store(key, stored)
            return copy.deepcopy(stored)

    def edit(
        self, api_version: str, kind: str, name: str, namespace: str | None, fn: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Change a live object out of band: ``fn`` edits a copy in place (bumps resourceVersion, generation on spec change)."""
        with self._lock:
            rtype = self._type_by_kind(api_version, kind)
            key = self._key(rtype, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise KeyError(f"{kind} {namespace}/{name} is not stored")
            new = copy.deepcopy(old)
            fn(new)
            stored = self._finish(rtype, old, new, manager="fake-edit", operation="Update", subresource="")
            self._store(key, stored)
            return copy.deepcopy(stored)

    def fail_next(self, method: str, path_contains: str, status: int, message: str = "", times: int = 1) -> None:
        """Answer the next ``times`` requests with ``method`` and a path containing ``path_contains`` with an error Status."""
        with self._lock:
            self._injections.append(
                _Injection(method.upper(), path_contains, status, message or f"injected error {status}", times)
            )

    def tick(self, api_version: str, kind: str, name: str, namespace: str | None = "default", times: int = 1) -> dict:
        """Advance an object's controller ``times`` ticks without a GET; returns the object."""
        with self._lock:
            rtype = self._type_by_kind(api_version, kind)
            key = self._key(rtype, namespace, name)
            for _ in range(times):
                self._tick(key)
            return copy.deepcopy(self._objects[key])

    # -- types ----------------------------------------------------------------------------------

    def _crds(self) -> list[dict[str, Any]]:
        return [o for k, o in self._objects.items() if k[:2] == ("apiextensions.k8s.io", "customresourcedefinitions")]

    def _served_types(self) -> list[ResourceType]:
        """Built-in types plus those of established CRDs: what discovery and the URLs serve."""
        types = list(BUILTIN_TYPES)
        for crd in self._crds():
            if crd_established(crd):
                types.extend(crd_types(crd))
        return types

    def _type_by_kind(self, api_version: str, kind: str) -> ResourceType:
        """For the test helpers: any built-in type or type of a stored CRD, established or not."""
        types = list(BUILTIN_TYPES) + [t for crd in self._crds() for t in crd_types(crd)]
        for rtype in types:
            if rtype.api_version == api_version and rtype.kind == kind:
                return rtype
        raise KeyError(f"no type {kind} in {api_version} (is its CRD stored?)")

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> Key:
        return (rtype.group, rtype.plural, (namespace or "default") if rtype.namespaced else "", name)

    def _key_of(self, obj: dict[str, Any]) -> Key:
        rtype = self._type_by_kind(obj["apiVersion"], obj["kind"])
        return self._key(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    # -- storage --------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _store(self, key: Key, obj: dict[str, Any]) -> None:
        old = self._objects.get(key)
        if old is not None and _without_rv(old) == _without_rv(obj):
            return
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key] = obj

    def _finish(
        self,
        rtype: ResourceType,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        *,
        manager: str,
        operation: str,
        subresource: str,
        fields: Any = None,
    ) -> dict[str, Any]:
        """Set the server-owned fields of ``new`` (the result of a write on ``old``); validate it.

        Returns ``old`` itself when the write changed nothing (a no-op keeps resourceVersion).
        """
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        meta = new.setdefault("metadata", {})
        apply_defaults(new)
        errors = validation_errors(rtype, new)
        if errors:
            raise _invalid(rtype, meta.get("name", ""), errors)
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            meta["generation"] = 1
            meta.pop("resourceVersion", None)
            meta["managedFields"] = []
        else:
            old_meta = old["metadata"]
            for key in ("uid", "creationTimestamp", "resourceVersion"):
                meta[key] = old_meta.get(key)
            meta["managedFields"] = copy.deepcopy(old_meta.get("managedFields") or [])
            changed = _spec_part(old) != _spec_part(new)
            meta["generation"] = int(old_meta.get("generation") or 1) + (1 if changed else 0)
        entry: dict[str, Any] = {
            "manager": manager,
            "operation": operation,
            "apiVersion": rtype.api_version,
            "time": now(),
            "fieldsType": "FieldsV1",
            "fieldsV1": _fields_v1(fields if fields is not None else _spec_part(new) | {"metadata": {}}),
        }
        if subresource:
            entry["subresource"] = subresource

        def ident(e: dict[str, Any]) -> tuple[Any, ...]:
            return (e.get("manager"), e.get("operation"), e.get("subresource", ""))

        others = [e for e in meta["managedFields"] if ident(e) != ident(entry)]
        mine = next((e for e in meta["managedFields"] if ident(e) == ident(entry)), None)
        same_fields = operation != "Apply" or (mine is not None and mine.get("fieldsV1") == entry["fieldsV1"])
        # A no-op keeps resourceVersion (an apply that takes ownership of new fields does not).
        if old is not None and same_fields and _without_server_fields(old) == _without_server_fields(new):
            return old
        meta["managedFields"] = [*others, entry]
        return new

    def _tick(self, key: Key) -> None:
        obj = self._objects.get(key)
        if obj is not None and self.controllers.handles(obj):
            self._store(key, self.controllers.tick(key, obj))

    def _delete(self, key: Key) -> None:
        obj = self._objects.pop(key, None)
        self._applied.pop(key, None)
        self.controllers.forget(key)
        self._rv += 1
        if obj is None:
            return
        if obj.get("kind") == "Namespace":  # a namespace takes its objects along (no Terminating phase)
            for other in [k for k in self._objects if k[2] == key[3]]:
                self._delete(other)
        if obj.get("kind") == "CustomResourceDefinition":  # and a CRD its custom resources
            names = [(t.group, t.plural) for t in crd_types(obj)]
            for other in [k for k in self._objects if k[:2] in names]:
                self._delete(other)

    # -- HTTP -----------------------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, content_type: str, raw_body: bytes, user_agent: str
    ) -> tuple[int, Any]:
        """Answer one request: (HTTP status, JSON body)."""
        parts = urlsplit(raw_path)
        path = unquote(parts.path).rstrip("/") or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        content_type = content_type.split(";")[0].strip()
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                try:
                    body = yaml.safe_load(raw_body)
                except yaml.YAMLError:
                    body = None
        dry_run = query.get("dryRun") == "All"
        with self._lock:
            self.requests.append(Request(method, parts.path, query, content_type, copy.deepcopy(body), dry_run))
            try:
                self._inject(method, parts.path)
                if raw_body and body is None:
                    raise ApiError(400, "the request body is neither JSON nor YAML")
                return self._route(method, path, query, content_type, body, dry_run, user_agent)
            except ApiError as error:
                return error.code, error.status()
            except PatchError as error:
                return 422, ApiError(422, str(error)).status()

    def _inject(self, method: str, path: str) -> None:
        for injection in self._injections:
            if injection.method == method and injection.path_contains in path and injection.times > 0:
                injection.times -= 1
                self._injections = [i for i in self._injections if i.times > 0]
                raise ApiError(injection.status, injection.message)

    def _route(
        self, method: str, path: str, query: dict[str, str], content_type: str, body: Any, dry_run: bool, agent: str
    ) -> tuple[int, Any]:
        if method == "GET":
            discovery = self._discovery(path)
            if discovery is not None:
                return 200, discovery
        target = self._target(path)
        if query.get("watch") in ("true", "True", "1"):
            raise ApiError(405, "the fake API server does not support watches: poll with GET")
        manager = query.get("fieldManager") or agent.split("/")[0] or "unknown"
        if method == "GET":
            return 200, self._read(target, query)
        if method == "DELETE":
            return 200, self._remove(target, dry_run, body if isinstance(body, dict) else {})
        if not isinstance(body, (dict, list)):
            raise ApiError(400, "a request body is required")
        if method == "POST":
            if target.name or target.status:
                raise ApiError(405, f"POST is not allowed on {path}")
            return 201, self._create(target, body, dry_run, manager)
        if not target.name:
            raise ApiError(405, f"{method} needs an object URL, not {path}")
        if method == "PUT":
            return 200, self._replace(target, body, dry_run, manager)
        if method == "PATCH":
            if content_type == APPLY:
                if "fieldManager" not in query or not query["fieldManager"]:
                    raise ApiError(
                        400,
                        "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value: is required for apply patch",
                    )
                return self._apply(target, body, dry_run, query["fieldManager"])
            if content_type in (MERGE, STRATEGIC, JSON_PATCH):
                return 200, self._patch(target, body, content_type, dry_run, manager)
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types include: {APPLY}, {MERGE}, {STRATEGIC}, {JSON_PATCH}",
            )
        raise ApiError(405, f"method {method} is not supported")

    # -- discovery ------------------------------------------------------------------------------

    def _discovery(self, path: str) -> dict[str, Any] | None:
        types = self._served_types()
        if path == "/version":
            return {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2024-08-13T00:00:00Z",
                "goVersion": "go1.22.5",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for rtype in types:
                if rtype.group and rtype.version not in groups.setdefault(rtype.group, []):
                    groups[rtype.group].append(rtype.version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
                    }
                    for group, versions in groups.items()
                ],
            }
        segments = path.strip("/").split("/")
        if segments == ["api", "v1"]:
            group_version = "v1"
        elif len(segments) == 3 and segments[0] == "apis":
            group_version = f"{segments[1]}/{segments[2]}"
        elif len(segments) == 2 and segments[0] == "apis":
            versions = sorted({t.version for t in types if t.group == segments[1]})
            if not versions:
                raise ApiError(404, "the server could not find the requested resource")
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": segments[1],
                "versions": [{"groupVersion": f"{segments[1]}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{segments[1]}/{versions[0]}", "version": versions[0]},
            }
        else:
            return None
        entries = [e for t in types if t.api_version == group_version for e in t.discovery()]
        if not entries:
            raise ApiError(404, "the server could not find the requested resource")
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}

    def _target(self, path: str) -> _Target:
        segments = path.strip("/").split("/")
        if segments[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segments[2:]
        elif segments[0] == "apis" and len(segments) >= 3:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] != "status":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3 or (len(rest) == 3 and rest[2] != "status"):
            raise ApiError(404, "the server could not find the requested resource")
        rtype = next(
            (t for t in self._served_types() if (t.group, t.version, t.plural) == (group, version, rest[0])), None
        )
        if rtype is None or (namespace and not rtype.namespaced):
            raise ApiError(404, "the server could not find the requested resource")
        if rtype.namespaced and not namespace and len(rest) > 1:
            raise ApiError(404, "the server could not find the requested resource")
        status = len(rest) == 3
        if status and not rtype.status_subresource:
            raise ApiError(404, "the server could not find the requested resource")
        return _Target(rtype, namespace, rest[1] if len(rest) > 1 else "", status)

    # -- reads ----------------------------------------------------------------------------------

    def _read(self, target: _Target, query: dict[str, str]) -> dict[str, Any]:
        if target.name:
            key = target.key()
            self._tick(key)  # a status read is the controller's clock
            obj = self._objects.get(key)
            if obj is None:
                raise _not_found(target.rtype, target.name)
            return copy.deepcopy(obj)
        rtype = target.rtype
        selector = query.get("labelSelector", "")
        fields = dict(
            term.split("=", 1) for term in query.get("fieldSelector", "").replace("==", "=").split(",") if "=" in term
        )
        items = []
        for key, obj in sorted(self._objects.items()):
            if key[:2] != (rtype.group, rtype.plural) or (target.namespace and key[2] != target.namespace):
                continue
            meta = obj["metadata"]
            if selector and not label_selector_matches(selector, meta.get("labels") or {}):
                continue
            if fields.get("metadata.name", meta["name"]) != meta["name"]:
                continue
            if fields.get("metadata.namespace", meta.get("namespace", "")) != meta.get("namespace", ""):
                continue
            item = copy.deepcopy(obj)
            if rtype.builtin:  # the real server leaves kind/apiVersion out of built-in list items
                item.pop("kind", None)
                item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    # -- writes ---------------------------------------------------------------------------------

    def _check_identity(self, target: _Target, body: dict[str, Any], name: str) -> None:
        """The body must name the URL's type, object and namespace."""
        rtype = target.rtype
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        shown = meta.get("name") or name or ""
        if body.get("apiVersion") != rtype.api_version or body.get("kind") != rtype.kind:
            raise _invalid(
                rtype,
                shown,
                [
                    f'apiVersion/kind: Invalid value: "{body.get("apiVersion")}/{body.get("kind")}": '
                    f"must be {rtype.api_version}/{rtype.kind} for {rtype.group_resource}"
                ],
            )
        if not meta.get("name"):
            raise _invalid(rtype, shown, ["metadata.name: Required value: name or generateName is required"])
        if name and meta["name"] != name:
            raise ApiError(400, f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        namespace = meta.get("namespace")
        if rtype.namespaced and namespace and target.namespace and namespace != target.namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")

    def _check_namespace(self, target: _Target) -> None:
        if target.rtype.namespaced and ("", "namespaces", "", target.namespace) not in self._objects:
            raise ApiError(
                404,
                f'namespaces "{target.namespace}" not found',
                details={"name": target.namespace, "kind": "namespaces"},
            )

    def _check_resource_version(self, target: _Target, body: dict[str, Any], live: dict[str, Any]) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        if wanted and wanted != live["metadata"].get("resourceVersion"):
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {target.rtype.group_resource} "{target.name}": {CONFLICT_MESSAGE}',
                details={"name": target.name, "group": target.rtype.group, "kind": target.rtype.plural},
            )

    def _commit(self, key: Key, result: dict[str, Any], old: dict[str, Any] | None, dry_run: bool) -> dict[str, Any]:
        """Store ``result`` unless dry-run; return what the client sees."""
        if dry_run:
            shown = copy.deepcopy(result)
            if old is not None:
                shown["metadata"]["resourceVersion"] = old["metadata"].get("resourceVersion")
            return shown
        if result is not old:
            result = self.controllers.after_write(result)
            self._store(key, result)
        return copy.deepcopy(self._objects[key])

    def _with_status_rules(self, target: _Target, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        """Status isolation: the main resource never writes status, /status writes nothing else."""
        if target.status:
            assert old is not None
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = copy.deepcopy(new["status"])
            else:
                result.pop("status", None)
            return result
        if target.rtype.status_subresource:
            new = copy.deepcopy(new)
            if old is not None and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        return new

    def _create(self, target: _Target, body: Any, dry_run: bool, manager: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be an object")
        self._check_identity(target, body, "")
        self._check_namespace(target)
        body = copy.deepcopy(body)
        for field_name in SERVER_METADATA:
            body["metadata"].pop(field_name, None)
        if target.rtype.namespaced:
            body["metadata"]["namespace"] = target.namespace
        key = target.key(body["metadata"]["name"])
        if key in self._objects:
            name = body["metadata"]["name"]
            raise ApiError(
                409,
                f'{target.rtype.group_resource} "{name}" already exists',
                details={"name": name, "group": target.rtype.group, "kind": target.rtype.plural},
            )
        new = self._with_status_rules(target, None, body)
        result = self._finish(target.rtype, None, new, manager=manager, operation="Update", subresource="")
        return self._commit(key, result, None, dry_run)

    def _live(self, target: _Target) -> dict[str, Any]:
        live = self._objects.get(target.key())
        if live is None:
            raise _not_found(target.rtype, target.name)
        return live

    def _replace(self, target: _Target, body: Any, dry_run: bool, manager: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be an object")
        self._check_identity(target, body, target.name)
        live = self._live(target)
        self._check_resource_version(target, body, live)
        new = copy.deepcopy(body)
        new["metadata"]["namespace"] = live["metadata"].get("namespace")
        if not target.rtype.namespaced:
            new["metadata"].pop("namespace", None)
        new = self._with_status_rules(target, live, new)
        result = self._finish(
            target.rtype, live, new, manager=manager, operation="Update", subresource="status" if target.status else ""
        )
        return self._commit(target.key(), result, live, dry_run)

    def _patch(self, target: _Target, body: Any, content_type: str, dry_run: bool, manager: str) -> dict[str, Any]:
        live = self._live(target)
        if content_type == JSON_PATCH:
            patched = json_patch(live, body)
        else:
            if not isinstance(body, dict):
                raise ApiError(400, "a merge patch must be a JSON object")
            self._check_resource_version(target, body, live)
            patched = merge_patch(live, body)
        if not isinstance(patched, dict):
            raise ApiError(422, "the patch did not produce an object")
        for field_name in ("name", "namespace", "uid"):  # identity does not change through a patch
            if field_name in live["metadata"]:
                patched.setdefault("metadata", {})[field_name] = live["metadata"][field_name]
        new = self._with_status_rules(target, live, patched)
        result = self._finish(
            target.rtype,
            live,
            new,
            manager=manager,
            operation="Update",
            subresource="status" if target.status else "",
            fields=body if isinstance(body, dict) else None,
        )
        return self._commit(target.key(), result, live, dry_run)

    def _apply(self, target: _Target, body: Any, dry_run: bool, manager: str) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            raise ApiError(400, "an apply patch must be an object")
        self._check_identity(target, body, target.name)
        key = target.key()
        live = self._objects.get(key)
        if live is None:
            if target.status:
                raise _not_found(target.rtype, target.name)
            self._check_namespace(target)
        else:
            self._check_resource_version(target, body, live)
        config = copy.deepcopy(body)
        for field_name in SERVER_METADATA:
            config["metadata"].pop(field_name, None)
        if target.rtype.namespaced:
            config["metadata"]["namespace"] = target.namespace
        if target.rtype.status_subresource and not target.status:
            config.pop("status", None)  # applied status is dropped, and so not owned
        previous = self._applied.get(key, {}).get(manager)
        merged = apply_config(live or {}, previous, config)
        new = self._with_status_rules(target, live, merged)
        result = self._finish(
            target.rtype,
            live,
            new,
            manager=manager,
            operation="Apply",
            subresource="status" if target.status else "",
            fields=config,
        )
        shown = self._commit(key, result, live, dry_run)
        if not dry_run:
            self._applied.setdefault(key, {})[manager] = config
        return (201 if live is None else 200), shown

    def _remove(self, target: _Target, dry_run: bool, options: dict[str, Any]) -> dict[str, Any]:
        if not target.name:
            raise ApiError(405, "deletecollection is not supported by the fake API server")
        live = self._live(target)
        # DeleteOptions.preconditions, as a real server checks them: delete only that very object.
        expected = (options.get("preconditions") or {}).get("uid")
        if expected and expected != live["metadata"].get("uid"):
            raise ApiError(
                409,
                f"Precondition failed: UID in precondition: {expected}, UID in object meta: "
                f"{live['metadata'].get('uid')}",
            )
        if not dry_run:
            self._delete(target.key())
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": target.name,
                "group": target.rtype.group,
                "kind": target.rtype.plural,
                "uid": live["metadata"].get("uid"),
            },
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        cluster: FakeCluster = self.server.cluster  # type: ignore[attr-defined]
        code, payload = cluster.handle(
            self.command, self.path, self.headers.get("Content-Type", ""), raw, self.headers.get("User-Agent", "")
        )
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the request log is FakeCluster.requests
        pass
