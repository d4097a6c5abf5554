"""The ``kubernetes`` step: the service's manifests, server-side applied exactly as approved.

* **plan**: load the manifests from the attempt's copy of the bundle, render
  them, set the step's overrides (images, replicas, patches), label them as
  ApplySet members when pruning, put them in Helm's install order; then per
  object: LIVE = GET, MERGED = a server-side apply with ``dryRun=All`` (like
  ``kubectl diff --server-side``). An object in a Namespace the set itself
  creates, or of a kind whose CRD the set installs, cannot be dry-run yet: it
  is a create of the rendered object. With prune on, labelled members that the
  set no longer has are listed as prune (with the UIDs read: only those will
  ever be deleted). The objects (exactly what apply will
  send) go to the artifact store with the digest of the masked diffs (what the
  approvers saw); history gets the artifact's key and SHA-256, and the diff.
* **apply**: the approved objects (checksum-checked), dry-run again; a diff
  other than the approved one is a ``StalePlan`` naming the objects that
  changed (on a retry, objects an earlier attempt already brought to their
  approved state count as applied). With prune on, the ApplySet parent is
  widened first; then Namespaces and CRDs (waited for until Established, then
  discovery refreshed), then the rest in install order, heartbeating "applied
  12/30". What was applied, with the approved leftovers to prune, goes to the
  store (``applied_key``, its SHA-256 ``applied_digest``). Nothing is pruned
  here unless the step does not wait: pruning waits for health.
* **wait** (its own activity: a worker that dies here is replaced by one that
  waits again, never re-applies): poll every workload with ``kubectl rollout
  status``'s rules, heartbeating its progress; a progress deadline is
  ``Unhealthy`` at once. Then prune, if on: the approved leftovers that are
  still the objects the plan read (a UID precondition on each delete).
* **fetch** (drift): a dry-run diff of what was last applied.

Blocking client calls run in a thread so heartbeats go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from prodline.artifacts.store import ArtifactCorrupt, ArtifactMissing, ArtifactStore, sha256
from prodline.config.steps import KubernetesPatch, KubernetesStep
from prodline.config.templates import TemplateError
from prodline.config.templates import render as render_template
from prodline.contracts import NON_RETRYABLE_CONFIG, STALE_PLAN, UNHEALTHY, StepProgress, StepResult, StepRun

from ..context import WorkerContext
from ..kube.api import Api
from ..kube.check import held_canary
from ..kube.cluster import Cluster, Target, cluster_for
from ..kube.diff import (
    ObjectDiff,
    describe,
    diff_digest,
    diff_object,
    drop_allocated,
    mask_secrets,
    strip_server_fields,
)
from ..kube.health import WAITED_KINDS, Health, Unhealthy, rollout_status
from ..kube.manifests import (
    ManifestError,
    apply_overrides,
    canonical_json,
    install_order,
    label_members,
    load_manifests,
    object_identity,
    object_key,
    pod_spec,
)
from ..kube.manifests import render as render_manifests
from ..kube.prune import ApplySet, Pruned, prune_entry
from ..process import heartbeat_while, redact
from ..workspace import shared_store
from .base import StepRunner, approved_plan, saved_plan, scratch_file

log = structlog.get_logger("prodline.steps.kubernetes")

Obj = dict[str, Any]
T = TypeVar("T")
Reported = TypeVar("Reported", StepResult, StepProgress)
SpecT = TypeVar("SpecT", bound=KubernetesStep)

PLAN_FILE = "kubernetes-plan.json"
APPLIED_FILE = "kubernetes-applied.json"
CRD = "CustomResourceDefinition"
FIRST_KINDS = ("Namespace", CRD)  # applied before everything else, so the rest can be placed and known
CRD_ESTABLISHED_TIMEOUT = 60.0  # seconds, as Helm waits for its crds/


def config_error(message: str) -> ApplicationError:
    return ApplicationError(message, type=NON_RETRYABLE_CONFIG, non_retryable=True)


@dataclass
class Planned:
    """One object of the set as a dry-run sees it."""

    obj: Obj  # exactly what apply sends (namespace placed)
    live: Obj | None
    merged: Obj  # the dry-run's answer; the object itself when it could not be dry-run
    blind: bool  # not dry-run: its namespace or its CRD comes with the set
    diff: ObjectDiff


@dataclass
class Dry:
    """A dry-run of a whole set: each object, and the members left over for pruning."""

    planned: list[Planned]
    pruned: list[ObjectDiff]
    leftovers: list[Obj]  # as read: what pruned describes

    @property
    def diffs(self) -> list[ObjectDiff]:
        return [*(p.diff for p in self.planned), *self.pruned]

    @property
    def digest(self) -> str:
        return diff_digest(self.diffs)


class Session:
    """One step's cluster and objects, resolved from its config and the release (blocking calls)."""

    def __init__(self, run: StepRun, spec: KubernetesStep, store: ArtifactStore | None):
        self.run, self.spec = run, spec
        self.ctx = WorkerContext(run.context, store)
        self.values = self.ctx.template_values()  # once: it reads earlier steps' sensitive outputs
        # Manifests may render earlier steps' sensitive outputs (a ConfigMap value), and the API
        # server echoes what it was sent: every text the step reports (history) is masked.
        self.masks = [self.values[name] for name in run.context.sensitive_outputs if self.values.get(name)]
        self.masks += [value for variable in run.context.secrets.values() if (value := os.environ.get(variable))]
        with self.redacting():
            self._connect(run, spec, store)

    def _connect(self, run: StepRun, spec: KubernetesStep, store: ArtifactStore | None) -> None:
        self.namespace = self._rendered_text(spec.namespace, "namespace")
        target = Target(
            kubeconfig=self._rendered_text(spec.kubeconfig, "kubeconfig") if spec.kubeconfig else None,
            context=self._rendered_text(spec.context, "context") if spec.context else None,
            in_cluster=spec.in_cluster,
            environment_kubeconfig=run.context.env.get("KUBECONFIG"),
            step=run.step.name,
            field_prefix=run.step.kind,
        )
        self.cluster: Cluster = cluster_for(target)
        self.api = Api(self.cluster, self.namespace)
        self.applyset = ApplySet.of(run.context, run.step.name, self.namespace) if spec.prune else None
        self._known: dict[tuple[str, str], bool] = {}
        self._namespaces: dict[str, bool] = {}

    @contextlib.contextmanager
    def redacting(self) -> Iterator[None]:
        """Errors raised inside, with their messages masked."""
        try:
            yield
        except ApplicationError as exc:
            raise redacted_error(exc, self.masks) from None

    def clean(self, reported: Reported) -> Reported:
        """``reported`` (a result or a progress) with its texts masked, as history may hold it."""
        if isinstance(reported, StepResult):
            return reported.model_copy(
                update={"summary": redact(reported.summary, self.masks), "output": redact(reported.output, self.masks)}
            )
        return reported.model_copy(update={"message": redact(reported.message, self.masks)})

    def where(self, field: str) -> str:
        return f"step {self.run.step.name}: {self.run.step.kind}.{field}"

    def _rendered_text(self, text: str, field: str) -> str:
        try:
            return render_template(text, self.values)
        except TemplateError as exc:
            raise config_error(f"{self.where(field)}: {exc}") from None

    # --- the objects ------------------------------------------------------------------------

    def rendered(self) -> list[Obj]:
        """The step's objects as apply will send them: rendered, overridden, labelled, ordered, placed."""
        spec, values = self.spec, self.values
        try:
            manifests = load_manifests(spec.manifests, Path(self.ctx.workdir(".")))
            # Other tools' templates (Argo's `{{args.NAME}}`) are theirs; a typo of ours is still an error.
            manifests = render_manifests(manifests, lambda text: render_template(text, values, foreign_ok=True))
            manifests = apply_overrides(
                manifests,
                images={name: self._rendered_text(image, f"images.{name}") for name, image in spec.images.items()},
                replicas=self._replicas(),
                patches=[self._patch(p, i) for i, p in enumerate(spec.patches)],
            )
        except ManifestError as exc:
            raise config_error(f"step {self.run.step.name}: {exc}") from None
        objs = [m.obj for m in install_order(manifests)]
        if self.applyset is not None:
            objs = label_members(objs, self.applyset.id)
        return self.placed(objs)

    def _replicas(self) -> int | None:
        value = self.spec.replicas
        if value is None or isinstance(value, int):
            return value
        text = self._rendered_text(value, "replicas")
        try:
            return int(text)
        except ValueError:
            raise config_error(f"{self.where('replicas')}: {text!r} is not a whole number of replicas") from None

    def _patch(self, patch: KubernetesPatch, index: int) -> KubernetesPatch:
        try:
            value = self.ctx.render(patch.value) if patch.value is not None else None
        except ApplicationError as exc:
            raise config_error(f"{self.where(f'patches[{index}].value')}: {exc}") from None
        return patch.model_copy(update={"value": value})

    def placed(self, objs: Sequence[Obj]) -> list[Obj]:
        """Namespaces as the cluster will see them; kinds the set's own CRDs define are placed by
        the CRD's scope (the cluster does not know them yet)."""
        scopes = _crd_scopes(objs)
        out: list[Obj] = []
        for obj in objs:
            scope = scopes.get(_group_kind(obj))
            if scope is not None and not self.known(obj):
                meta = dict(obj.get("metadata") or {})
                if scope == "Namespaced":
                    meta["namespace"] = meta.get("namespace") or self.namespace
                else:
                    meta.pop("namespace", None)
                out.append({**obj, "metadata": meta})
            else:
                out.append(self.api.placed(obj))
        return out

    def known(self, obj: Obj) -> bool:
        """Whether the cluster serves ``obj``'s kind; remembered, as each miss re-reads discovery."""
        kind = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if kind not in self._known:
            self._known[kind] = self.api.known(obj)
        return self._known[kind]

    def namespace_exists(self, name: str) -> bool:
        """Whether the namespace is in the cluster; remembered for the session."""
        if name not in self._namespaces:
            self._namespaces[name] = (
                self.api.get({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}) is not None
            )
        return self._namespaces[name]

    # --- dry runs ---------------------------------------------------------------------------

    def dry_run(self, objs: Sequence[Obj]) -> Dry:
        """LIVE and MERGED of every object, and (pruning) the members no longer in the set."""
        new_namespaces: set[str] = set()
        scopes = _crd_scopes(objs)
        planned: list[Planned] = []
        for obj in objs:
            key = object_key(obj)
            namespace = (obj.get("metadata") or {}).get("namespace")
            uninstalled = _group_kind(obj) in scopes and not self.known(obj)
            # A namespace this set creates, or one still missing (an earlier step of the release
            # creates it, as examples/rollouts does): a server cannot dry-run into it yet.
            unplaced = bool(namespace) and (namespace in new_namespaces or not self.namespace_exists(namespace))
            if uninstalled or unplaced:
                planned.append(Planned(obj, None, obj, True, diff_object(key, None, obj)))
                continue
            live = self.api.get(obj)
            if obj["kind"] == "Namespace" and live is None:
                new_namespaces.add(obj["metadata"]["name"])
            merged = self.api.apply(obj, dry_run=True)
            planned.append(Planned(obj, live, merged, False, diff_object(key, live, merged)))
        leftovers = self.applyset.leftovers(self.api, objs) if self.applyset is not None else []
        return Dry(planned, [diff_object(object_key(o), o, None) for o in leftovers], leftovers)

    # --- apply ------------------------------------------------------------------------------

    def apply_all(self, objs: Sequence[Obj], progress: Callable[[str], None]) -> list[Obj]:
        """Apply ``objs``: Namespaces and CRDs first (CRDs until Established), then the ApplySet
        parent (it lives in a namespace the set may create), then the rest. Namespaces and CRDs
        are never pruned, so they need no parent before them."""
        first = [o for o in objs if o["kind"] in FIRST_KINDS]
        rest = [o for o in objs if o["kind"] not in FIRST_KINDS]
        answers: list[Obj] = []
        for obj in first:
            answers.append(self.api.apply(obj))
            progress(f"applied {len(answers)}/{len(objs)}")
        crds = [o for o in first if o["kind"] == CRD]
        if crds:
            progress(f"applied {len(answers)}/{len(objs)}; waiting for {len(crds)} CRD(s) to be established")
            self.wait_established(crds)
            self.cluster.refresh()
            self._known.clear()
        if self.applyset is not None:
            self.applyset.widen(self.api, objs)
        for obj in rest:
            answers.append(self.api.apply(obj))
            progress(f"applied {len(answers)}/{len(objs)}")
        return answers

    def wait_established(self, crds: Sequence[Obj]) -> None:
        """Until every CRD says Established (Helm's wait), bounded."""
        interval = max(0.05, self.spec.poll_interval.total_seconds())
        deadline = time.monotonic() + CRD_ESTABLISHED_TIMEOUT
        waiting = list(crds)
        while waiting:
            waiting = [c for c in waiting if not _established(self.api.get(c))]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(object_key(c) for c in waiting)
                raise ApplicationError(
                    f"step {self.run.step.name}: {names} not established after {CRD_ESTABLISHED_TIMEOUT:.0f}s",
                    type="KubernetesUnavailable",
                )
            time.sleep(interval)

    def prune(self, objs: Sequence[Obj], approved: Sequence[Obj]) -> Pruned:
        """Delete the leftovers the approved plan listed (``approved``) that are still those objects."""
        if self.applyset is None:
            return Pruned()
        done = self.applyset.prune(self.api, objs, approved)
        for key in done.deleted:
            log.info("kubernetes.pruned", step=self.run.step.name, object=key)
        for why in done.skipped:
            log.info("kubernetes.not_pruned", step=self.run.step.name, object=why)
        return done

    # --- health -----------------------------------------------------------------------------

    def health(self, obj: Obj) -> Health:
        live = self.api.get(obj)
        if live is None:
            raise Unhealthy(f"{object_key(obj)} was deleted while being waited for", "Deleted")
        return rollout_status(live)


def redacted_error(exc: ApplicationError, masks: Sequence[str]) -> ApplicationError:
    """``exc`` as it was (type, retryability, details), its message and text details masked."""
    if not masks:
        return exc
    details = [redact(d, masks) if isinstance(d, str) else d for d in exc.details]
    return ApplicationError(
        redact(exc.message, masks),
        *details,
        type=exc.type,
        non_retryable=exc.non_retryable,
        next_retry_delay=exc.next_retry_delay,
        category=exc.category,
    )


def unhealthy_error(session: Session, exc: Unhealthy, obj: Obj | None = None) -> ApplicationError:
    """A rollout that waiting will not fix, with the controller's message and the images it
    was rolling out (what changed, most often): fail, no retry."""
    spec = pod_spec(obj) if obj is not None else None
    containers = [*(spec or {}).get("initContainers", []), *(spec or {}).get("containers", [])]
    images = ", ".join(f"{c.get('name')}={c.get('image')}" for c in containers if isinstance(c, dict))
    shown = f"; images: {images}" if images else ""
    return ApplicationError(
        f"step {session.run.step.name}: {exc.message} ({exc.reason}){shown}",
        exc.reason,
        type=UNHEALTHY,
        non_retryable=True,
    )


def _refuse_held_canaries(run: StepRun, objs: Sequence[Obj]) -> None:
    """A kubernetes step holds no canary waiting to be promoted (``prodline validate`` says so too)."""
    held = held_canary(objs)
    if held:
        raise config_error(f"step {run.step.name}: {held}")


def _crd_scopes(objs: Sequence[Obj]) -> dict[str, str]:
    """``Kind.group`` -> scope of every kind the set's own CRDs define."""
    scopes: dict[str, str] = {}
    for obj in objs:
        if obj.get("kind") == CRD:
            spec = obj.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind")
            if kind:
                scopes[f"{kind}.{spec.get('group', '')}"] = str(spec.get("scope") or "Namespaced")
    return scopes


def _group_kind(obj: Obj) -> str:
    group = object_identity(obj)[0]
    return f"{obj.get('kind', '')}.{group}"


def _established(crd: Obj | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _result_view(obj: Obj) -> Obj:
    """An object as a plan compares its result: no server fields nor allocated ones (a created
    Service's IP and node ports are not the dry-run's), Secrets masked."""
    view = mask_secrets(strip_server_fields(obj), None)[0] or {}
    drop_allocated(view)
    return view


async def in_thread(fn: Callable[[], T], details: dict[str, Any] | None = None) -> T:
    """Run blocking client work in a thread, heartbeating (``details`` may change meanwhile)."""
    return await heartbeat_while(asyncio.to_thread(fn), details if details is not None else progress_details("working"))


def progress_details(message: str) -> dict[str, Any]:
    return StepProgress(message=message).model_dump()


def heartbeat(details: dict[str, Any]) -> None:
    if activity.in_activity():
        activity.heartbeat(details)


class KubernetesRunner(StepRunner[KubernetesStep]):
    spec_type = KubernetesStep
    # Whether the step holds a canary at its `pause: {}` steps and promotes it (the rollout step).

    def __init__(self, store: ArtifactStore | None = None):
        self.store = store  # None: the worker's shared store, looked up when a step runs

    async def session(self, run: StepRun, spec: KubernetesStep) -> Session:
        return await in_thread(lambda: Session(run, spec, self.store))

    async def masked(
        self, run: StepRun, spec: KubernetesStep, body: Callable[[Session], Awaitable[Reported]]
    ) -> Reported:
        """``body`` in the step's session: what it returns and every error it raises, masked."""
        session = await self.session(run, spec)
        with session.redacting():
            return session.clean(await body(session))

    # --- plan -------------------------------------------------------------------------------

    async def plan(self, run: StepRun, spec: KubernetesStep) -> StepResult:
        return await self.masked(run, spec, lambda session: self._plan(session, run))

    async def _plan(self, session: Session, run: StepRun) -> StepResult:
        details = progress_details("planning")

        def planned() -> tuple[list[Obj], Dry]:
            objs = session.rendered()
            if not run.step.spec.drives_pauses:  # a rollout step drives its pauses
                _refuse_held_canaries(run, objs)
            details["message"] = f"dry-run of {len(objs)} objects"
            return objs, session.dry_run(objs)

        objs, dry = await in_thread(planned, details)
        summary, text = describe(dry.diffs, session.masks)
        artifact = {
            "objects": objs,
            "diff_digest": dry.digest,
            "entries": {
                p.diff.key: {"digest": diff_digest([p.diff]), "after": _result_view(p.merged), "blind": p.blind}
                for p in dry.planned
            },
            "prune": sorted(d.key for d in dry.pruned),
            # What the approvers saw listed for pruning, as read (UIDs): all that will ever be pruned.
            "prune_entries": [prune_entry(o) for o in dry.leftovers],
        }
        log.info("kubernetes.plan", release=run.context.release_id, environment=run.context.environment,
                 step=run.step.name, summary=summary, digest=dry.digest)  # fmt: skip
        with scratch_file(PLAN_FILE) as planfile:
            planfile.write_text(canonical_json(artifact))
            return saved_plan(
                run,
                self.store,
                planfile,
                summary=summary,
                output=f"{text}\ndiff digest {dry.digest}".strip(),
                changed=any(d.action != "unchanged" for d in dry.diffs),
            )

    # --- apply ------------------------------------------------------------------------------

    async def apply(self, run: StepRun, spec: KubernetesStep) -> StepResult:
        return await self.masked(run, spec, lambda session: self._apply(session, run, spec))

    async def _apply(self, session: Session, run: StepRun, spec: KubernetesStep) -> StepResult:
        approved = json.loads(approved_plan(run, self.store))
        objs: list[Obj] = approved["objects"]
        details = progress_details("checking the plan")
        dry = await in_thread(lambda: session.dry_run(objs), details)
        self._refuse_stale(run, approved, dry)

        def beat(message: str) -> None:
            details["message"] = message

        await in_thread(lambda: session.apply_all(objs, beat), details)
        created = sum(1 for p in dry.planned if p.diff.action == "create")
        updated = sum(1 for p in dry.planned if p.diff.action == "update")
        summary = f"applied {len(objs)} object{'' if len(objs) == 1 else 's'} ({created} created, {updated} updated)"
        to_prune: list[Obj] = approved.get("prune_entries", []) if spec.prune else []
        pruned = Pruned()
        if spec.prune and not spec.wait:  # nothing to wait for: every apply has passed
            pruned = await in_thread(lambda: session.prune(objs, to_prune), details)
            summary += f", {len(pruned.deleted)} pruned"
        # What wait needs: the objects (to wait for, to re-apply) and the approved leftovers (to
        # prune once healthy). Canonical JSON: applied_digest is its SHA-256.
        key = run.artifact_key(APPLIED_FILE)
        stored = {"objects": objs, "prune": to_prune}
        digest = (self.store or shared_store()).put(key, canonical_json(stored).encode())
        log.info("kubernetes.applied", release=run.context.release_id, environment=run.context.environment,
                 step=run.step.name, summary=summary, applied_digest=digest)  # fmt: skip
        lines = [f"{p.diff.action}: {p.diff.key}" for p in dry.planned if p.diff.action != "unchanged"]
        lines += [f"pruned: {k}" for k in pruned.deleted] + [f"not pruned: {why}" for why in pruned.skipped]
        return StepResult(
            summary=summary,
            output="\n".join(lines[-50:]),
            changed=bool(created or updated or pruned.deleted),
            applied_key=key,
            applied_digest=digest,
        )

    @staticmethod
    def _refuse_stale(run: StepRun, approved: dict[str, Any], dry: Dry) -> None:
        """A dry-run other than the approved one is stale, unless (a retry) what differs is only
        what an earlier attempt already applied: then applying again converges."""
        if dry.digest == approved["diff_digest"]:
            return
        retry = activity.in_activity() and activity.info().attempt > 1
        entries: dict[str, Any] = approved["entries"]
        changed: list[str] = []
        for p in dry.planned:
            entry = entries.get(p.diff.key)
            if entry is None or diff_digest([p.diff]) == entry["digest"]:
                continue
            if retry and p.diff.action == "unchanged" and (entry["blind"] or _at_result(p, entry["after"])):
                continue  # an earlier attempt applied it and died before saying so
            if entry["blind"] and p.diff.action == "create":
                continue  # approved as a create of exactly this object, before it could be dry-run
            changed.append(p.diff.key)
        was_pruned, to_prune = set(approved["prune"]), {d.key for d in dry.pruned}
        changed += sorted(f"{k} (now to prune)" for k in to_prune - was_pruned)
        if not retry:  # on a retry, a leftover gone was pruned by the earlier attempt
            changed += sorted(f"{k} (no longer there to prune)" for k in was_pruned - to_prune)
        if not changed:
            return
        raise ApplicationError(
            f"step {run.step.name}: the approved plan is stale: the cluster changed since it was made: "
            + "; ".join(changed),
            type=STALE_PLAN,
            non_retryable=True,
        )

    # --- wait -------------------------------------------------------------------------------

    def applied_objects(self, run: StepRun) -> list[Obj]:
        """What apply deployed, checked against the digest it reported."""
        return self.applied_set(run)[0]

    def applied_set(self, run: StepRun) -> tuple[list[Obj], list[Obj]]:
        """What apply deployed and the approved leftovers to prune, checked against its digest."""
        applied = run.applied
        if applied is None or not applied.applied_key or not applied.applied_digest:
            raise config_error(f"step {run.step.name}: waiting needs what apply deployed, and none was given")
        try:
            data = (self.store or shared_store()).get(applied.applied_key)
        except (ArtifactMissing, ArtifactCorrupt) as exc:
            raise config_error(f"step {run.step.name}: what apply deployed cannot be read: {exc}") from None
        if sha256(data) != applied.applied_digest:
            raise config_error(
                f"step {run.step.name}: the stored objects differ from what apply deployed (checksum mismatch)"
            )
        stored = json.loads(data)
        if isinstance(stored, list):  # applied before prune lists were kept: nothing approved to prune
            return stored, []
        return stored["objects"], stored["prune"]

    async def wait(self, run: StepRun, spec: KubernetesStep) -> StepProgress:
        return await self.masked(run, spec, lambda session: self._wait(session, run))

    async def _wait(self, session: Session, run: StepRun) -> StepProgress:
        objs, to_prune = await in_thread(lambda: self.applied_set(run))
        message = await self.wait_healthy(session, [o for o in objs if o["kind"] in WAITED_KINDS])
        return await self.finish(session, objs, to_prune, message)

    async def finish(self, session: Session, objs: list[Obj], to_prune: list[Obj], message: str) -> StepProgress:
        """Healthy: prune what the plan approved (when on) and say so."""
        if session.applyset is not None:
            pruned = await in_thread(lambda: session.prune(objs, to_prune))
            message += f"; {pruned.message}" if pruned.message else ""
        return StepProgress(done=True, message=message)

    @staticmethod
    def _health(session: Session, obj: Obj) -> Health:
        try:
            return session.health(obj)
        except Unhealthy as exc:
            raise unhealthy_error(session, exc, obj) from None

    async def wait_healthy(self, session: Session, workloads: Sequence[Obj]) -> str:
        """Poll until every workload is rolled out; heartbeat where they stand."""
        interval = session.spec.poll_interval.total_seconds()
        details = progress_details("waiting")
        while True:
            states = await in_thread(lambda: [(o, self._health(session, o)) for o in workloads], details)
            pending = [h.message for _, h in states if not h.done]
            if not pending:
                return "; ".join(h.message for _, h in states) or "nothing to wait for"
            details["message"] = "; ".join(pending)
            heartbeat(details)
            await asyncio.sleep(interval)  # a cancelled activity stops here

    # --- fetch ------------------------------------------------------------------------------

    async def fetch(self, run: StepRun, spec: KubernetesStep) -> StepResult:
        return await self.masked(run, spec, lambda session: self._fetch(session, run))

    async def _fetch(self, session: Session, run: StepRun) -> StepResult:
        if run.applied is not None and run.applied.applied_key:
            objs = await in_thread(lambda: self.applied_objects(run))
        else:
            objs = await in_thread(session.rendered)
        dry = await in_thread(lambda: session.dry_run(objs))
        summary, text = describe(dry.diffs, session.masks)
        changed = any(d.action != "unchanged" for d in dry.diffs)
        return StepResult(summary=summary if changed else "in sync", output=text, changed=changed)


def _at_result(planned: Planned, after: Obj) -> bool:
    """Whether the live object is what the approved plan said applying would make of it."""
    return planned.live is not None and _result_view(planned.live) == after
