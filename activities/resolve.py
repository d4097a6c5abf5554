"""The release's plan, resolved on a trusted worker from what the platform registered.

The release workflow's input comes from whoever starts the release, so it holds
no policy: only the service version, the parameter values and the bundle's
digest. This activity (on the control queue, next to the release workflow)
builds what the release runs:

* the application's environments and rules from the revision registered in
  Temporal (``prodline app apply``), current now -- the release pins it;
* the steps from the service file *inside the bundle*, fetched from the artifact
  store and verified against its digest, checked against that revision exactly
  as ``prodline validate`` checks local files.

A local ``prodline.yaml`` never reaches this far, and neither does a script
edited after ``release start``: the bundle is named by its content.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path, PurePosixPath

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from prodline.artifacts.cache import BundleCache, BundleCorrupt, NotInBundle
from prodline.artifacts.store import ArtifactMissing, ArtifactStore
from prodline.config.application import Application
from prodline.config.errors import ConfigError
from prodline.config.loader import file_kind
from prodline.config.problems import parse_model
from prodline.config.release import EnvironmentRun, ReleasePlan, ReleaseRequest, build_plan, freeze_gate
from prodline.config.resolve import combine, environment_rules
from prodline.config.rules import Precondition
from prodline.config.service import Service
from prodline.config.yamlsource import parse_yaml
from prodline.contracts import (
    NON_RETRYABLE_CONFIG,
    RESOLVE_RELEASE,
    REVISION_MEMO,
    REVISION_QUERY,
    DeploymentRecord,
    Revision,
    application_id,
    live_deployment,
)
from prodline.errors import Unavailable

from .ledger import UnprovenRecord, prove_record, read_ledger
from .workspace import shared_store

# A query needs a worker on the registry's queue; without one it would wait for good.
REGISTRY_TIMEOUT = timedelta(seconds=10)


async def registered_revision(client: Client, application: str, number: int = 0) -> Revision | None:
    """A registered revision of ``application`` (0: the current one); None if it was never registered."""
    handle = client.get_workflow_handle(application_id(application))
    try:
        return await handle.query(
            REVISION_QUERY,
            number,
            result_type=Revision,
            rpc_timeout=REGISTRY_TIMEOUT,
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
            raise Unavailable(
                f"the registry of application {application!r} did not answer within "
                f"{REGISTRY_TIMEOUT.total_seconds():g}s: is a worker running on the control queue?"
            ) from None
        raise


async def current_revision(client: Client, application: str) -> Revision | None:
    """The current revision, found the cheap way: the application workflow's memo says which one
    (a describe, answered by the server; a query would wait in line for a worker), and a
    revision, once applied, never changes, so each is fetched once per worker process."""
    try:
        description = await client.get_workflow_handle(application_id(application)).describe(
            rpc_timeout=REGISTRY_TIMEOUT
        )
        memo = await description.memo()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    current = memo.get(REVISION_MEMO)
    if not isinstance(current, dict) or not isinstance(current.get("number"), int):
        return await registered_revision(client, application)  # an application workflow without the memo
    key = (application, current["number"], current.get("digest"))
    revision = _REVISIONS.get(key)
    if revision is None:
        revision = await registered_revision(client, application, current["number"])
        if revision is None or revision.digest != current.get("digest"):  # re-created since: ask afresh
            return await registered_revision(client, application)
        _REVISIONS[key] = revision
    return revision


# Revisions by (application, number, digest) and plans by everything they are made of: both
# are content-addressed, so a hit is exactly what resolving again would give.
_REVISIONS: dict[tuple[str, int, str | None], Revision] = {}
_PLANS: OrderedDict[tuple, ReleasePlan] = OrderedDict()
_PLANS_KEPT = 256


def refuse(message: str) -> ApplicationError:
    """A release that cannot start: retrying does not help."""
    return ApplicationError(message, type=NON_RETRYABLE_CONFIG, non_retryable=True)


class ResolveActivities:
    def __init__(self, client: Client, store: ArtifactStore | None = None):
        self.client = client
        self._store = store

    async def _first_run(self, release_id: str) -> None:
        """A rollback or a heal runs once: its ID holds a nonce, so another run of it is the same
        request (and signed start) sent again, after the one it was for."""
        this = activity.info().workflow_run_id
        async for run in self.client.list_workflows(f'WorkflowId = "{release_id}"'):
            if run.run_id != this:
                raise refuse(
                    f"{release_id} ran before (run {run.run_id}): a rollback or a heal runs once; start a new one "
                    "with `prodline rollback`"
                )

    @activity.defn(name=RESOLVE_RELEASE)
    async def resolve_release(self, request: ReleaseRequest) -> ReleasePlan:
        """The registered revision's rules with the bundle's steps, resolved per environment."""
        revision = await current_revision(self.client, request.application)
        if revision is None:
            raise refuse(
                f"application {request.application!r} is not registered in Temporal: "
                "the platform team registers it with `prodline app apply prodline.yaml`"
            )
        if request.restore is not None:
            await self._first_run(request.release_id)
            records = await read_ledger(self.client, request.application, request.service, request.restore.environment)
            record = restored_record(request, records)
            try:
                await prove_record(self.client, record)  # what it restores is what a release recorded
            except UnprovenRecord as exc:
                raise refuse(f"refusing to restore {request.version} in {request.restore.environment}: {exc}") from None
            return restore_plan(request, revision, record)
        if request.bundle is None or not request.service_file:
            raise refuse("the release names no bundle: start it with `prodline release start` (0.2 or later)")
        inside = PurePosixPath(request.service_file)
        if inside.is_absolute() or ".." in inside.parts:
            raise refuse(f"service file {request.service_file!r} is not a path inside the bundle")
        cache = BundleCache(self._store or shared_store())
        try:
            # The service file's bytes, proven against the bundle's digest on this very read
            # (every release: a bundle changed in the store or the cache is refused here).
            data = await asyncio.to_thread(cache.read, request.bundle, request.service_file)
        except (BundleCorrupt, ArtifactMissing, NotInBundle) as exc:  # an unreachable store is retried
            raise refuse(str(exc)) from None
        key = (
            revision.application,
            revision.number,
            revision.digest,
            request.service,
            request.bundle.digest,
            request.service_file,
            tuple(sorted(request.parameters.items())),
            request.initiator,
        )
        if key in _PLANS:  # parsing and validating again would give the same plan
            _PLANS.move_to_end(key)
            return _PLANS[key]
        plan = self._resolved(request, revision, data)
        _PLANS[key] = plan
        if len(_PLANS) > _PLANS_KEPT:
            _PLANS.popitem(last=False)
        return plan

    def _resolved(self, request: ReleaseRequest, revision: Revision, data: bytes) -> ReleasePlan:
        assert request.bundle is not None
        try:
            return _plan(request, revision, data)
        except ConfigError as exc:
            problems = "\n".join(f"  {p}" for p in exc.problems)
            raise refuse(
                f"the service file in bundle {request.bundle.digest} does not validate against "
                f"{request.application} revision {revision.number}:\n{problems}"
            ) from None


def _plan(request: ReleaseRequest, revision: Revision, data: bytes) -> ReleasePlan:
    app_doc = parse_yaml(revision.source, Path(revision.path or "prodline.yaml"))
    app = parse_model(app_doc, Application)
    inside = PurePosixPath(request.service_file)
    # Problems name the file as it is in the bundle.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse(f"{request.service_file} in the bundle is not UTF-8 text") from None
    service_doc = parse_yaml(text, Path(request.service_file))
    if file_kind(service_doc) != "service":
        raise refuse(f"{request.service_file} in the bundle is not a service file")
    service = parse_model(service_doc, Service)
    if service.service != request.service:
        raise refuse(f"{request.service_file} in the bundle is service {service.service!r}, not {request.service!r}")
    project = combine(app, app_doc, service, service_doc)
    return build_plan(
        project,
        request.parameters,
        request.initiator,
        service_dir=str(inside.parent),
        application_dir=str(PurePosixPath(revision.path or "prodline.yaml").parent),
        revision=revision.number,
        revision_digest=revision.digest,
        service_bundle=request.bundle,
        application_bundle=revision.bundle,
    )


def restored_record(request: ReleaseRequest, records: list[DeploymentRecord]) -> DeploymentRecord:
    """The ledger's latest record of the version verified in the environment a rollback restores."""
    order = request.restore
    assert order is not None
    verified = [r for r in records if r.version == request.version and r.redeployable]
    if not verified:
        known = sorted({r.version for r in records if r.redeployable})
        raise refuse(
            f"{request.version} was never verified in {order.environment} (or was recorded before rollbacks "
            f"were possible): a rollback restores only what the ledger recorded there; verified there: "
            f"{', '.join(known) or 'nothing yet'}"
        )
    record = verified[-1]
    live = live_deployment(records)
    if order.kind == "heal" and (live is None or live.version != record.version):
        # A heal puts back what runs there; any other version is a rollback's business.
        raise refuse(f"a heal restores the version live in {order.environment}, and {request.version} is not")
    return record


def restore_plan(request: ReleaseRequest, revision: Revision, record: DeploymentRecord) -> ReleasePlan:
    """A rollback's plan: the steps, bundle and parameters the ledger recorded when the version
    was verified there (``record``, proven), under the rules today's registered revision sets
    for the environment (less what it lets a rollback skip). Nothing of the requester's
    checkout is used."""
    order = request.restore
    assert order is not None
    app = parse_model(parse_yaml(revision.source, Path(revision.path or "prodline.yaml")), Application)
    env = app.environment(order.environment)
    if env is None:
        raise refuse(f"application {request.application!r} has no environment {order.environment!r}")
    if order.kind == "heal" and not env.drift.self_heal:
        raise refuse(f"{order.environment} does not heal drift (`drift: {{self_heal: true}}` is not set there)")
    preconditions, checks = environment_rules(env, app)
    preconditions = [freeze_gate(app.application, env), *preconditions]  # as every release has it
    bypass = set(env.rollback.bypass) if order.kind == "rollback" else set()
    kept, skipped = _bypassed(preconditions, bypass)
    stage = EnvironmentRun(
        name=env.name,
        task_queue=env.task_queue or "",
        verify=env.verify,
        env=dict(env.env),
        parameters=record.parameters,
        steps=record.steps,
        preconditions=kept,
        checks=checks,
        bypassed=skipped,
        drift_every=env.drift.every,
        self_heal=env.drift.self_heal,
    )
    return ReleasePlan(
        revision=revision.number,
        revision_digest=revision.digest,
        service_bundle=record.service_bundle,
        service_dir=record.service_dir,
        application_bundle=revision.bundle,
        application_dir=str(PurePosixPath(revision.path or "prodline.yaml").parent),
        secrets=record.secrets,
        environments=[stage],
        people=app.people,
        signed_starts=app.signed_starts,
    )


def _bypassed(preconditions: list[Precondition], bypass: set[str]) -> tuple[list[Precondition], list[str]]:
    """The preconditions a rollback keeps, and the names of the rules it skips."""
    kept, skipped = [], []
    for rule in preconditions:
        kind = rule.kind
        if (
            (kind == "approval" and "approvals" in bypass)
            or (kind == "stable" and "ordering" in bypass)
            or (kind == "freeze" and "freezes" in bypass)
        ):
            skipped.append(f"{kind} {rule.label}" if rule.label != kind else kind)
            continue
        if kind == "stable" and "soak" in bypass and rule.stable is not None and rule.stable.soak:
            rule = rule.model_copy(update={"stable": rule.stable.model_copy(update={"soak": timedelta(0)})})
            skipped.append(f"soak of {rule.label}")
        kept.append(rule)
    return kept, skipped
