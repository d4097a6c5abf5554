"""The release request: one service version, resolved for every environment.

The CLI builds it from the two config files and hands it to the release
workflow as its input, so the workflow never reads a file and the history
holds exactly what was asked for. Secret *values* are never in it: only the
name of the worker's environment variable that holds each one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import Field, ValidationError

from .base import Model, Name, Version
from .errors import ConfigError, Problem
from .loader import load_project
from .problems import dedupe
from .resolve import Project, check_values
from .rules import Check, Precondition
from .steps import Step


class EnvironmentRun(Model):
    """What the release does in one environment."""

    name: Name
    env: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, str] = Field(default_factory=dict)
    steps: list[Step]
    preconditions: list[Precondition] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)


class ReleaseRequest(Model):
    """Input of the release workflow."""

    application: Name
    service: Name
    version: Version
    initiator: str = "unknown"
    service_dir: str = Field(description="Absolute folder of the service file; step workdirs are relative to it.")
    application_dir: str = Field(
        description="Absolute folder of the application file; rule workdirs are relative to it."
    )
    secrets: dict[str, str] = Field(
        default_factory=dict, description="Secret parameter -> worker environment variable."
    )
    environments: list[EnvironmentRun]

    @property
    def release_id(self) -> str:
        return release_id(self.application, self.service, self.version)

    @property
    def digest(self) -> str:
        """Fingerprint of what would run; tells a retried start whether the config changed."""
        payload = self.model_dump(mode="json", exclude={"initiator"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def release_id(application: str, service: str, version: str) -> str:
    """The business ID of a release: one workflow per service version."""
    return f"{application}.{service}@{version}"


def build_request(project: Project, version: str, values: dict[str, str], initiator: str) -> ReleaseRequest:
    """Resolve parameters for every environment; raise ConfigError for bad values."""
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
                env=dict(env.environment.env),
                parameters=params,
                steps=env.steps,
                preconditions=env.preconditions,
                checks=env.checks,
            )
        )
    try:
        request = ReleaseRequest(
            application=project.application.application,
            service=service.service,
            version=version,
            initiator=initiator,
            service_dir=str(project.service_file.resolve().parent),
            application_dir=str(project.application_file.resolve().parent),
            secrets={n: p.from_env for n, p in service.parameters.items() if p.type == "secret" and p.from_env},
            environments=plans,
        )
    except ValidationError as exc:
        problems.append(
            Problem(
                "--version",
                0,
                (),
                f"{version!r} is not a valid version: {exc.errors()[0]['msg']}",
                "use letters, digits, dots, dashes, plus and underscores, like 1.4.2",
            )
        )
        request = None
    if problems:
        raise ConfigError(dedupe(problems))
    assert request is not None
    return request


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


def load_request(
    service_file: Path, version: str, values: dict[str, str], initiator: str, application_file: Path | None = None
) -> ReleaseRequest:
    return build_request(load_project(service_file, application_file), version, values, initiator)
