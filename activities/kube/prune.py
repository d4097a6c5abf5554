"""Pruning with ApplySet (KEP-3659) labels: what kubectl's ``--applyset`` would delete, and only that.

A step with ``prune: true`` owns an ApplySet whose parent is a Secret in the
step's namespace, ``prodline-<service>-<environment>-<step>-<hash>``: the hash
(10 hex digits of SHA-256) is of the application, environment, service and
step, so two environments (or applications) sharing a cluster and namespace
have two sets, and names that read alike (service ``shop`` + step
``web-deploy``, service ``shop-web`` + step ``deploy``) are still two. Every object it applies
carries ``applyset.kubernetes.io/part-of=<id>``; the parent lists the kinds
(``contains-group-kinds``) and the other namespaces its members live in, so
both prodline and ``kubectl`` can find the members again.

- Before members are applied, the parent is widened to the union of the kinds
  and namespaces it listed and the new set's (a member is never unlisted, even
  when the apply dies half way).
- The plan lists the live members the set no longer has (never a Namespace
  or a CRD: deleting one deletes what is in it), each with the UID it read.
  Those, and only those, are deleted once every apply and health check
  passed (maybe hours later, after a canary), each with a UID precondition:
  a member labelled after the plan was never approved, and an object deleted
  and made anew under the same name is not the one approved; both are left
  alone and said so. Then the parent narrows to the new set (and what was
  left alone).

Objects without the label are never touched, whoever made them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.exceptions import ApplicationError

from prodline.contracts import RunContext

from .api import Api, http_status
from .manifests import (
    GROUP_KINDS_ANNOTATION,
    NAMESPACES_ANNOTATION,
    PART_OF_LABEL,
    applyset_id,
    group_kind,
    group_kinds,
    object_identity,
    object_key,
    parent_secret,
)

Obj = dict[str, Any]

# Deleting these deletes what is in them (every object of a namespace, every custom resource).
NEVER_PRUNED = frozenset({"Namespace", "CustomResourceDefinition"})
MAX_NAME = 253  # a Secret's name is a DNS subdomain (the ID label is a hash of it: always short)
HASH_LENGTH = 10


@dataclass
class Pruned:
    """What a prune did: the keys deleted, and why each of the others was left alone."""

    deleted: list[str] = field(default_factory=lambda: [])
    skipped: list[str] = field(default_factory=lambda: [])

    @property
    def message(self) -> str:
        parts = [f"{len(self.deleted)} pruned"] if self.deleted else []
        if self.skipped:
            parts.append("not pruned: " + ", ".join(self.skipped))
        return "; ".join(parts)


def prune_entry(live: Obj) -> Obj:
    """What a plan keeps of a leftover to delete it later: its kind, name, namespace and UID."""
    meta = live.get("metadata") or {}
    entry_meta = {"name": meta["name"], "uid": meta.get("uid", "")}
    if meta.get("namespace"):
        entry_meta["namespace"] = meta["namespace"]
    return {"apiVersion": live["apiVersion"], "kind": live["kind"], "metadata": entry_meta}


@dataclass(frozen=True)
class ApplySet:
    """One step's set: its parent Secret and the ID its members are labelled with."""

    name: str
    namespace: str

    @classmethod
    def of(cls, context: RunContext, step: str, namespace: str) -> ApplySet:
        """The set of ``step`` of this application, environment and service, in ``namespace``."""
        owner = [context.application, context.environment, context.service, step]
        digest = hashlib.sha256(json.dumps(owner).encode()).hexdigest()[:HASH_LENGTH]
        prefix = _dns_name(f"prodline-{context.service}-{context.environment}-{step}")
        return cls(f"{prefix[: MAX_NAME - HASH_LENGTH - 1].rstrip('-')}-{digest}", namespace)

    @property
    def id(self) -> str:
        return applyset_id(self.name, self.namespace)

    @property
    def selector(self) -> str:
        return f"{PART_OF_LABEL}={self.id}"

    def parent(self, members: Sequence[Obj]) -> Obj:
        """The parent Secret listing ``members``' kinds and namespaces."""
        return parent_secret(
            self.name, self.namespace, self.id, group_kinds(members), additional_namespaces=_namespaces(members)
        )

    def listed(self, api: Api) -> tuple[list[str], list[str]]:
        """The kinds and namespaces the live parent lists (none when there is no parent yet)."""
        live = api.get(self.parent([]))
        annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
        return _split(annotations.get(GROUP_KINDS_ANNOTATION)), _split(annotations.get(NAMESPACES_ANNOTATION))

    def widen(self, api: Api, members: Sequence[Obj]) -> None:
        """Write the parent listing what it listed plus ``members`` (before they are applied)."""
        kinds, namespaces = self.listed(api)
        parent = self.parent(members)
        annotations = parent["metadata"]["annotations"]
        annotations[GROUP_KINDS_ANNOTATION] = ",".join(sorted({*kinds, *group_kinds(members)}))
        extra = sorted({*namespaces, *_namespaces(members)} - {self.namespace})
        if extra:
            annotations[NAMESPACES_ANNOTATION] = ",".join(extra)
        api.apply(parent)

    def narrow(self, api: Api, members: Sequence[Obj]) -> None:
        """Write the parent listing exactly ``members`` (after the others were pruned)."""
        api.apply(self.parent(members))

    def leftovers(self, api: Api, members: Sequence[Obj]) -> list[Obj]:
        """Live members of the set that are not in ``members``, in the kinds and namespaces the
        parent and ``members`` list; never Namespaces or CRDs."""
        kinds, namespaces = self.listed(api)
        kinds = sorted({*kinds, *group_kinds(members)} - {group_kind(m) for m in members if m["kind"] in NEVER_PRUNED})
        where = sorted({self.namespace, *namespaces, *_namespaces(members)})
        wanted = {object_identity(m) for m in members}
        found: list[Obj] = []
        for kind in kinds:
            if kind.partition(".")[0] in NEVER_PRUNED:
                continue
            served = api.served_version(kind)
            if served is None:
                continue  # the kind is gone from the cluster, and its objects with it
            api_version, namespaced = served
            for namespace in where if namespaced else [None]:
                for live in api.list(api_version, kind.partition(".")[0], self.selector, namespace):
                    if object_identity(live) not in wanted:
                        found.append(live)
        return found

    def prune(self, api: Api, members: Sequence[Obj], approved: Sequence[Obj]) -> Pruned:
        """Delete the ``approved`` leftovers (:func:`prune_entry`) that are still the objects the
        plan read, then narrow the parent to ``members`` and what was left alone."""
        done = Pruned()
        kept: list[Obj] = []
        for entry in approved:
            key, uid = object_key(entry), entry["metadata"].get("uid") or None
            live = api.get(entry)
            if live is None:
                done.skipped.append(f"{key} (already gone)")
                continue
            if uid and (live.get("metadata") or {}).get("uid") != uid:
                done.skipped.append(f"{key} (replaced since the plan: another object of that name)")
                kept.append(entry)
                continue
            try:
                # The precondition makes the check and the delete one step on the server.
                deleted = api.delete(entry, uid=uid)
            except ApplicationError as exc:
                if http_status(exc) != 409:
                    raise
                done.skipped.append(f"{key} (replaced since the plan: another object of that name)")
                kept.append(entry)
                continue
            if deleted:
                done.deleted.append(key)
            else:
                done.skipped.append(f"{key} (already gone)")
        self.narrow(api, [*members, *kept])
        return done


def _namespaces(members: Iterable[Obj]) -> list[str]:
    return sorted({ns for m in members if (ns := (m.get("metadata") or {}).get("namespace"))})


def _split(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part]


def _dns_name(text: str) -> str:
    """A valid object name: lower case, [a-z0-9-], at most 253 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:MAX_NAME].rstrip("-") or "prodline"
