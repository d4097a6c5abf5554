"""A release: what the releaser asks for, and what the platform's config resolves it to.

Two payloads, on either side of the trust boundary:

* :class:`ReleaseRequest` is the release workflow's input, sent by whoever starts
  the release (CI, a person). It names the service version, the parameter values
  given on the command line and the *bundle* (content-addressed archive of the
  service's folder, by digest) -- and nothing else. No rule, no environment.
* :class:`ReleasePlan` is what the workflow runs. An activity on the control
  worker builds it (``activities/resolve.py``): the application's rules from the
  revision registered in Temporal (``prodline app apply``), the steps from the
  service file *inside the bundle*, parameters checked and resolved per
  environment. It is recorded in history as that activity's result, so the
  release keeps the revision it started with for its whole life.

Secret *values* are in neither: only the name of the worker's environment
variable that holds each one.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationError

from prodline.identity.documents import Signed

from .base import Model, Name, Version
from .errors import ConfigError, Problem
from .rules import Check, OnFailure, Precondition
from .steps import Step

# The models here are payloads every client imports (through prodline.contracts); resolving
# a plan is the control worker's and `release start`'s job, so the loader, the resolver and
# the application model (YAML, pydantic schemas) are imported by the functions that resolve.
if TYPE_CHECKING:
    from .application import Application, Environment
    from .resolve import Project


class BundleRef(Model):
    """A bundle in the artifact store, named by its content."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="SHA-256 of the canonical tar.")
    size: int = Field(ge=0, description="Bytes of the canonical tar.")
    files: int = Field(default=0, ge=0)

    @property
    def short(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]


def revision_digest(app: Application, bundle: BundleRef | None) -> str:
    """What an application revision is: the validated config (not its formatting) and the
    files its rules run. The application workflow records it; an admin signing an apply
    computes the same (``prodline app apply --key``)."""
    # Defaults left out: a field added later (with its default) must not change old revisions' digests.
    canonical = json.dumps(app.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":"))
    payload = canonical + "\n" + (bundle.digest if bundle is not None else "")
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


class ReleaseRequest(Model):
    """Input of the release workflow: what the releaser asks for, no policy."""

    application: Name
    service: Name
    version: Version
    initiator: str = "unknown"
    bundle: BundleRef | None = Field(default=None, description="The service's code; the only code the release runs.")
    service_file: str = Field(default="", description="Path of the service file inside the bundle.")
    parameters: dict[str, str] = Field(default_factory=dict, description="Values given with --param.")
    signed: Signed | None = Field(
        default=None, description="The initiator's signature over the start (`release start --key`)."
    )
    # Releases started before applications were registered carried their resolved config
    # here. Only their replays read these fields; a new run ignores them (workflows/release.py).
    service_dir: str = ""
    application_dir: str = ""
    secrets: dict[str, str] = Field(default_factory=dict)
    environments: list[EnvironmentRun] = Field(default_factory=list)
    restore: RestoreOrder | None = Field(
        default=None,
        description="A rollback (or a self-heal): re-deploy `version` in one environment exactly as the ledger "
        "recorded it there when it was verified; no bundle of today's checkout is used.",
    )

    @property
    def release_id(self) -> str:
        if self.restore is not None:
            return self.restore.release_id(self.application, self.service, self.version)
        return release_id(self.application, self.service, self.version)

    @property
    def digest(self) -> str:
        """Fingerprint of what was asked; tells a retried start whether the code or values changed."""
        # A retried start signs afresh: who and the signature are not what was asked.
        payload = self.model_dump(mode="json", exclude={"initiator", "signed"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class RestoreOrder(Model):
    """What `prodline rollback` (or a drift check that heals) asks for: no code, no rules."""

    environment: Name
    kind: Literal["rollback", "heal"] = "rollback"
    reason: str = Field(min_length=1, max_length=2000)
    nonce: str = Field(pattern=r"^[A-Za-z0-9-]{1,40}$", description="Makes each rollback its own workflow.")

    def release_id(self, application: str, service: str, version: str) -> str:
        return f"{release_id(application, service, version)}~{self.kind}-{self.environment}-{self.nonce}"


class EnvironmentRun(Model):
    """What the release does in one environment."""

    name: Name
    task_queue: str = Field(default="", description="Where its steps and rules run; empty: the control queue.")
    verify: Literal["none", "ssh"] = Field(
        default="none", description="`ssh`: decisions here count only when signed by `people`."
    )
    env: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, str] = Field(default_factory=dict)
    steps: list[Step]
    preconditions: list[Precondition] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    # Release safety (config/safety.py), resolved for this service here.
    rollback: bool = Field(default=False, description="A failure here restores the version verified before.")
    supersede: bool = False
    allow_downgrade: bool = False
    bypassed: list[str] = Field(default_factory=list, description="A rollback: the rules it skips, as allowed.")
    drift_every: timedelta | None = Field(default=None, description="How often drift is looked for (unset: never).")
    self_heal: bool = False


class ReleasePlan(Model):
    """What a release runs: the registered revision's rules with the bundle's steps."""

    revision: int = Field(default=0, description="Registered revision of the application; 0: none (old releases).")
    revision_digest: str = ""
    service_bundle: BundleRef | None = None
    service_dir: str = Field(description="Folder of the service file: inside the service bundle, or absolute.")
    application_bundle: BundleRef | None = None
    application_dir: str = Field(description="Folder of the application file: inside its bundle, or absolute.")
    secrets: dict[str, str] = Field(default_factory=dict, description="Secret parameter -> worker variable.")
    environments: list[EnvironmentRun]
    people: dict[str, list[str]] = Field(
        default_factory=dict, description="Who may sign decisions, with their public keys (from the revision)."
    )
    signed_starts: bool = False

    @classmethod
    def carried_by(cls, request: ReleaseRequest) -> ReleasePlan:
        """The plan a release started before registered applications carried in its input."""
        return cls(
            service_dir=request.service_dir,
            application_dir=request.application_dir,
            secrets=request.secrets,
            environments=request.environments,
        )


def release_id(application: str, service: str, version: str) -> str:
    """The business ID of a release: one workflow per service version."""
    return f"{application}.{service}@{version}"


def check_version(version: str) -> list[Problem]:
    try:
        ReleaseRequest(application="a", service="s", version=version)
    except ValidationError as exc:
        return [
            Problem(
                "--version",
                0,
                (),
                f"{version!r} is not a valid version: {exc.errors()[0]['msg']}",
                "use letters, digits, dots, dashes, plus and underscores, like 1.4.2",
            )
        ]
    return []


def build_plan(
    project: Project,
    values: dict[str, str],
    initiator: str,
    *,
    service_dir: str | None = None,
    application_dir: str | None = None,
    **pinned: object,
) -> ReleasePlan:
    """Resolve parameters for every environment; raise ConfigError for bad values.

    ``service_dir``/``application_dir`` default to the files' absolute folders (local
    runs and tests); the resolve activity passes the folders inside the bundles, and the
    revision and bundles as ``pinned``.
    """
    from .problems import dedupe
    from .resolve import check_values

    service = project.service
    where = str(project.service_file)
    given, problems = check_values(
        service.parameters,
        values,
        "on the command line",
        lambda name, message, hint: Problem(where, 0, ("parameters", name), message, hint),
    )
    problems += _unmeetable_approvals(project, initiator)
    plans = []
    for env in project.environments:
        # env.parameters holds the defaults with this environment's overrides applied; an
        # override in the file wins over a release-wide --param, a default does not.
        override = service.environments.get(env.environment.name)
        overridden = set(override.parameters) if override is not None else set()
        params = {k: str(v) for k, v in env.parameters.items()}
        params.update({k: v for k, v in given.items() if k not in overridden})
        for name, param in service.parameters.items():
            if param.type != "secret" and name not in params:
                problems.append(
                    Problem(
                        where,
                        0,
                        ("parameters", name),
                        f"parameter {name!r} has no value for {env.environment.name}",
                        f"pass --param {name}=VALUE or give it a default",
                    )
                )
        plans.append(
            EnvironmentRun(
                name=env.environment.name,
                task_queue=env.environment.task_queue or "",
                verify=env.environment.verify,
                env=dict(env.environment.env),
                parameters=params,
                steps=env.steps,
                preconditions=[freeze_gate(project.application.application, env.environment), *env.preconditions],
                checks=env.checks,
                rollback=service.automatic_rollback(env.environment.name, env.environment.rollback.automatic),
                drift_every=env.environment.drift.every,
                self_heal=env.environment.drift.self_heal,
                **service.release_policy(env.environment.name).model_dump(),
            )
        )
    if problems:
        raise ConfigError(dedupe(problems))
    return ReleasePlan.model_validate(
        {
            "service_dir": service_dir if service_dir is not None else str(project.service_file.resolve().parent),
            "application_dir": application_dir
            if application_dir is not None
            else str(project.application_file.resolve().parent),
            "secrets": {n: p.from_env for n, p in service.parameters.items() if p.type == "secret" and p.from_env},
            "environments": plans,
            "people": project.application.people,
            "signed_starts": project.application.signed_starts,
            **pinned,
        }
    )


# How often a release held by a manual freeze looks again, and how long it waits before it times out.
FREEZE_INTERVAL = timedelta(seconds=10)
FREEZE_TIMEOUT = timedelta(days=7)


def freeze_gate(application: str, environment: Environment) -> Precondition:
    """The precondition every environment starts with: no freeze holds it (scheduled or manual)."""
    from .rules import FreezeRule

    return Precondition(
        name="freeze",
        freeze=FreezeRule(application=application, environment=environment.name, scheduled=environment.freezes),
        on_failure=OnFailure.wait,
        interval=FREEZE_INTERVAL,
        timeout=FREEZE_TIMEOUT,
    )


def _unmeetable_approvals(project: Project, initiator: str) -> list[Problem]:
    """Approval rules this initiator's release could never pass: refused at start, rather
    than found out when the approval times out."""
    problems = []
    for i, env in enumerate(project.application.environments):
        for j, rule in enumerate(env.preconditions):
            why = rule.approval.unmeetable_for(initiator) if rule.approval is not None else ""
            if why:
                loc = ("environments", i, "preconditions", j, "approval")
                message = f"{env.name}: precondition {rule.label}: {why}"
                hint = "start it as someone else (--initiator), list more approvers or lower min_approvers"
                doc = project.application_doc
                where = (
                    doc.problem(loc, message, hint)
                    if doc
                    else Problem(str(project.application_file), 0, loc, message, hint)
                )
                problems.append(where)
    return problems


def load_plan(
    service_file: Path, values: dict[str, str], initiator: str, application_file: Path | None = None
) -> ReleasePlan:
    """The plan of local files, folders absolute: for `prodline validate`-like checks and tests."""
    from .loader import load_project

    return build_plan(load_project(service_file, application_file), values, initiator)


ReleaseRequest.model_rebuild()
