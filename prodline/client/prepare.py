"""What ``release start`` does before it starts anything: check, pack, upload.

The release workflow trusts nothing it is sent (``activities/resolve.py``
resolves the plan again on a worker), so this is for fast feedback and for the
bundle: the service file is checked against the application's *registered*
revision -- never against a local ``prodline.yaml``, which at most earns a note
that it differs -- then the service's folder is packed into a content-addressed
bundle and uploaded to the artifact store once (an unchanged folder uploads
nothing). The request that comes out names the bundle by digest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from prodline.activities.resolve import registered_revision
from prodline.artifacts.bundle import pack, upload
from prodline.artifacts.store import ArtifactStore
from prodline.config.application import Application
from prodline.config.changes import summarise
from prodline.config.errors import ConfigError, Problem
from prodline.config.loader import find_application_file, load_application, load_project, load_service
from prodline.config.problems import parse_model
from prodline.config.release import ReleaseRequest, build_plan, check_version
from prodline.config.resolve import Project, combine
from prodline.config.steps import Step
from prodline.config.yamlsource import parse_yaml
from prodline.contracts import Revision
from prodline.errors import InvalidInput
from prodline.identity.documents import StartDocument

from .signatures import Signer


@dataclass(frozen=True)
class Prepared:
    request: ReleaseRequest
    revision: Revision
    uploaded: int  # bytes sent to the store: 0 when it had the bundle already
    notes: list[str] = field(default_factory=list)
    queues: dict[str, str] = field(default_factory=dict)  # environment -> its task queue ("" : the control queue)


async def prepare(
    temporal: Client,
    service_file: Path,
    version: str,
    values: dict[str, str],
    initiator: str,
    store: ArtifactStore,
    application_file: Path | None = None,
    signer: Signer | None = None,
) -> Prepared:
    """The request for releasing ``service_file`` at ``version``; ConfigError/InvalidInput if it cannot be.

    The service is checked against the revision registered in Temporal, which is what the
    worker will check again (:func:`check_locally` is the offline check before this one).
    With a ``signer``, the initiator signs the start once the bundle is known: the release,
    the bundle's digest and the parameters (a StartDocument), verified by the workflow.
    """
    service, service_doc = load_service(service_file)
    local = application_file or find_application_file(service_file)
    revision = await registered_revision(temporal, service.application)
    if revision is None:
        raise InvalidInput(
            f"application {service.application!r} is not registered in Temporal; the platform team "
            f"registers it with `prodline app apply prodline.yaml` (service file {service_file})"
        )
    app_doc = parse_yaml(revision.source, Path(f"{service.application} revision {revision.number}"))
    app = parse_model(app_doc, Application)
    _check(lambda: combine(app, app_doc, service, service_doc), version, values, initiator)
    if signer is not None and app.people:
        _check_signer(signer, app, revision)
    if app.signed_starts and signer is None:
        # The workflow would refuse it too; saying so here starts nothing and packs nothing.
        raise InvalidInput(
            f"{service.application} revision {revision.number} requires signed starts: "
            "add --key ~/.ssh/KEY (your key enrolled under `people`)"
        )

    root = (service_file.parent / service.bundle.root).resolve()
    try:
        inside = service_file.resolve().relative_to(root).as_posix()
    except ValueError:
        raise ConfigError(
            [service_doc.problem(("bundle", "root"), f"{root} does not contain the service file", "use . or ..")]
        ) from None
    notes = _local_application_note(local, app, revision)
    with pack(root) as packed:
        notes += packed.warnings
        uploaded = await asyncio.to_thread(upload, packed, store)
        bundle = packed.ref
    request = ReleaseRequest(
        application=service.application,
        service=service.service,
        version=version,
        initiator=initiator,
        bundle=bundle,
        service_file=inside,
        parameters=values,
    )
    if signer is not None:
        document = signer.document(
            StartDocument,
            release=request.release_id,
            application=request.application,
            service=request.service,
            version=request.version,
            bundle=bundle.digest,
            service_file=inside,
            parameters=values,
        )
        request = request.model_copy(update={"signed": signer.sign(document)})
    queues = {env.name: env.task_queue or "" for env in app.environments}
    return Prepared(request, revision, uploaded, notes, queues)


def check_locally(
    service_file: Path, version: str, values: dict[str, str], initiator: str, application_file: Path | None = None
) -> None:
    """Feedback before anything is contacted: the service file and the command line.

    Checked against the local application file if there is one, for the environments it
    knows; only problems in the service file or the command line refuse here. Whatever the
    local application file says about itself changes nothing: what counts is the registered
    revision (:func:`prepare`).
    """
    load_service(service_file)
    local = application_file or find_application_file(service_file)
    problems = manifest_check(service_file, local)
    if problems:
        raise ConfigError(problems)
    if local is None:
        problems = check_version(version)
        if problems:
            raise ConfigError(problems)
        return
    try:
        _check(lambda: load_project(service_file, local), version, values, initiator)
    except ConfigError as exc:
        own = [p for p in exc.problems if Path(p.file).resolve() != local.resolve()]
        if own:
            raise ConfigError(own) from None


def manifest_check(service_file: Path, application_file: Path | None = None) -> list[Problem]:
    """The service's Kubernetes manifests and overrides, offline (``activities/kube/check.py``):
    as written, and per environment where its application file is at hand."""
    from prodline.activities.kube.check import manifest_problems  # only services with such steps pay

    service, doc = load_service(service_file)
    if not any(step.kind in ("kubernetes", "rollout") for step in service.steps):
        return []
    per_environment: dict[str, list[Step]] = {}
    with contextlib.suppress(ConfigError):  # problems of the pair are reported where they are checked
        project = load_project(service_file, application_file)
        per_environment = {env.environment.name: env.steps for env in project.environments}
    return manifest_problems(service, doc, per_environment)


def _check(project: Callable[[], Project], version: str, values: dict[str, str], initiator: str) -> None:
    """Every problem of releasing the project at ``version`` with ``values``, at once."""
    problems = check_version(version)
    try:
        build_plan(project(), values, initiator)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)


def _check_signer(signer: Signer, app: Application, revision: Revision) -> None:
    """Refuse up front a start the workflow would refuse: a key nobody enrolled, or another
    person's name with it. Only a courtesy: the workflow checks the signature itself."""
    from prodline.identity.signing import public_key  # cryptography: only when signing
    from prodline.identity.verify import Keyring

    owner = Keyring.of(app.people).owner(public_key(signer.key.expanduser()))
    where = f"{app.application} revision {revision.number}"
    if owner is None:
        raise InvalidInput(
            f"--key {signer.key}: this key is not enrolled under `people` in {where} "
            f"(people: {', '.join(sorted(app.people))})"
        )
    if signer.by and signer.by != owner.person:
        raise InvalidInput(
            f"--initiator {signer.by}, but --key {signer.key} is {owner.person}'s in {where}: "
            f"the initiator of a signed start is the key's owner (leave --initiator out)"
        )


def _local_application_note(local: Path | None, registered: Application, revision: Revision) -> list[str]:
    """One line when a local application file says something else than the registered revision."""
    if local is None:
        return []
    try:
        app, _ = load_application(local)
    except ConfigError:
        app = None
    if app == registered:
        return []
    changes = (summarise(registered, app) or ["its settings differ"]) if app is not None else ["it does not validate"]
    shown = "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")
    return [
        f"{local} differs from {registered.application} revision {revision.number} registered in Temporal "
        f"({shown}); the release obeys the registered revision "
        f"(see `prodline app diff {registered.application} {local}`)"
    ]
