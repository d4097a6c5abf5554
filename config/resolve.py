"""A service against its application: what each environment runs, overrides applied.

Per environment: the service's steps with that environment's overrides merged over
them (nested maps merge) and its skipped steps left out, parameter values checked
against their types, template names checked against what the release provides,
and the rules that reference a protection (``use``) inlined. Every problem is
located in its file; nothing here reads a file.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from .application import Application, Environment
from .errors import ConfigError, Problem
from .problems import dedupe, known_hint, problems_from
from .rules import Check, Precondition, RuleRef
from .service import Parameter, Service
from .steps import KubernetesStep, Step
from .templates import BUILTIN_NAMES, outputs_prefix, unknown_names
from .yamlsource import Document, PathKey


@dataclass
class EnvironmentConfig:
    """Everything one environment runs for one service, overrides applied."""

    environment: Environment
    steps: list[Step]
    preconditions: list[Precondition]
    checks: list[Check]
    parameters: dict[str, Any]  # file-level values (defaults, then this environment's overrides)


@dataclass
class Project:
    """A service together with its application, validated across both files."""

    application: Application
    service: Service
    application_file: Path
    service_file: Path
    environments: list[EnvironmentConfig] = field(default_factory=list)
    # Locates problems found only at release start (they depend on who starts it).
    application_doc: Document | None = None


# Makes the problem for parameter NAME: (name, message, hint) -> Problem, located by the caller.
ProblemAt = Callable[[str, str, str], Problem]


def check_values(
    parameters: Mapping[str, Parameter], values: Mapping[str, Any], given_in: str, problem: ProblemAt
) -> tuple[dict[str, str], list[Problem]]:
    """Values for declared, non-secret parameters, checked against their types (as text).

    The one check for every place a value comes from: the command line (``--param``)
    and an environment's overrides in the service file. ``given_in`` says where, for
    the message about secrets, whose values are read on the worker only.
    """
    checked: dict[str, str] = {}
    problems: list[Problem] = []
    for name, value in values.items():
        param = parameters.get(name)
        if param is None:
            declared = ", ".join(parameters) or "none"
            problems.append(
                problem(name, f"unknown parameter {name!r}", f"declared: {declared}; declare more under `parameters:`")
            )
        elif param.type == "secret":
            problems.append(
                problem(name, f"a secret's value cannot be given {given_in}", f"set {param.from_env} on the worker")
            )
        else:
            try:
                checked[name] = param.coerce(value)
            except ValueError as exc:
                problems.append(problem(name, str(exc), ""))
    return checked, problems


def combine(app: Application, adoc: Document, service: Service, sdoc: Document) -> Project:
    """Cross-file checks, then each environment's merged steps and resolved rules."""
    if service.application != app.application:
        raise ConfigError(
            [
                sdoc.problem(
                    ("application",),
                    f"application {service.application!r} does not match {app.application!r} in {adoc.path}",
                    f"set `application: {app.application}` or pass the right application file with --app",
                )
            ]
        )
    problems: list[Problem] = []
    if app.services is not None and service.service not in app.services:
        listed = ", ".join(app.services) or "none"
        problems.append(
            sdoc.problem(
                ("service",),
                f"application {app.application!r} does not list service {service.service!r}",
                f"it lists: {listed}; the platform team adds services to `services:` in {adoc.path}",
            )
        )
    for env_name in service.environments:
        if app.environment(env_name) is None:
            close = difflib.get_close_matches(env_name, app.environment_names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"environments are: {', '.join(app.environment_names)}"
            problems.append(
                sdoc.problem(
                    ("environments", env_name), f"no environment {env_name!r} in application {app.application!r}", hint
                )
            )
    project = Project(app, service, Path(adoc.path), Path(sdoc.path), application_doc=adoc)
    for env in app.environments:
        env_config, env_problems = _environment_config(env, app, service, sdoc)
        problems += env_problems
        if env_config is not None:
            project.environments.append(env_config)
    problems += _pause_problems(app, service, sdoc)
    if problems:
        raise ConfigError(dedupe(problems))
    return project


def _pause_problems(app: Application, service: Service, sdoc: Document) -> list[Problem]:
    """A canary pause naming a check no environment has is a typo. One that only some
    environments have runs there and is skipped elsewhere: the platform's rules per
    environment are the application's, the service only says which hold which pause."""
    labels = {check.label for env in app.environments for check in env.checks}
    problems = []
    for index, step in enumerate(service.steps):
        if step.rollout is None:
            continue
        for number, pause in enumerate(step.rollout.pauses):
            for name in pause.checks or []:
                if name not in labels:
                    close = difflib.get_close_matches(name, labels, n=1)
                    hint = (
                        f"did you mean {close[0]!r}?" if close else f"checks are: {', '.join(sorted(labels)) or 'none'}"
                    )
                    problems.append(
                        sdoc.problem(
                            ("steps", index, "rollout", "pauses", number, "checks"),
                            f"pause {number + 1} names check {name!r}, which no environment of {app.application!r} has",
                            hint,
                        )
                    )
    return problems


def environment_rules(env: Environment, app: Application) -> tuple[list[Precondition], list[Check]]:
    """The environment's preconditions and checks, protections inlined: a rollback, which
    re-deploys recorded steps, obeys these (as today's revision has them) like any release."""
    return [_inline_protection(rule, app) for rule in env.preconditions], [
        _inline_protection(rule, app) for rule in env.checks
    ]


def _environment_config(
    env: Environment, app: Application, service: Service, sdoc: Document
) -> tuple[EnvironmentConfig | None, list[Problem]]:
    override = service.environments.get(env.name)
    problems: list[Problem] = []
    parameters: dict[str, Any] = {n: p.default for n, p in service.parameters.items() if p.default is not None}
    steps_raw = {s.name: (i, sdoc.data["steps"][i]) for i, s in enumerate(service.steps)}
    if override is not None:
        oloc: PathKey = ("environments", env.name)
        values, value_problems = check_values(
            service.parameters,
            override.parameters,
            "in the file",
            lambda name, message, hint: sdoc.problem((*oloc, "parameters", name), message, hint),
        )
        parameters |= values
        problems += value_problems
        for name in [*override.steps, *override.skip]:
            if name not in steps_raw:
                where = "steps" if name in override.steps else "skip"
                problems.append(
                    sdoc.problem((*oloc, where, name), f"no step named {name!r}", f"steps are: {', '.join(steps_raw)}")
                )
    steps: list[Step] = []
    for step in service.steps:
        index, raw = steps_raw[step.name]
        if override is not None and step.name in override.skip:
            continue
        patch = override.steps.get(step.name) if override is not None else None
        if patch:
            try:
                step = Step.model_validate(_deep_merge(raw, patch))
            except ValidationError as exc:
                problems += problems_from(exc, sdoc, Step, ("environments", env.name, "steps", step.name))
                continue
        problems += _template_problems(step, steps, service, sdoc, ("steps", index))
        problems += _cluster_problems(step, env, sdoc, index, patch)
        steps.append(step)
    preconditions, checks = environment_rules(env, app)
    if problems:
        return None, problems
    return EnvironmentConfig(env, steps, preconditions, checks, parameters), []


def _template_problems(
    step: Step, earlier: list[Step], service: Service, sdoc: Document, loc: PathKey
) -> list[Problem]:
    """Template names in ``step`` that the release does not provide (secrets never are)."""
    secrets = {n for n, p in service.parameters.items() if p.type == "secret"}
    known = {*BUILTIN_NAMES, *(f"params.{n}" for n in service.parameters if n not in secrets)}
    outputs = [outputs_prefix(s.name) for s in earlier]
    problems = []
    for bad in unknown_names(step.spec.model_dump(), known, outputs):
        param = bad.removeprefix("params.")
        if bad.startswith("params.") and param in secrets:
            variable = f"PRODLINE_PARAM_{param.upper().replace('-', '_')}"
            hint = f"secrets reach commands only as the environment variable {variable}"
        else:
            hint = known_hint(known) + (f", and {', '.join(p + 'KEY' for p in outputs)}" if outputs else "")
        problems.append(sdoc.problem(loc, f"unknown template name {{{{ {bad} }}}}", hint))
    return problems


def _cluster_problems(
    step: Step, env: Environment, sdoc: Document, index: int, patch: dict[str, Any] | None
) -> list[Problem]:
    """Where the application names an environment's cluster (``env: {KUBECONFIG: ...}``), a
    service's step may not point somewhere else: which cluster is production is the platform's
    rule, not something a release can change (a staging step naming production's kubeconfig)."""
    spec = step.spec
    if "KUBECONFIG" not in env.env or not isinstance(spec, KubernetesStep):
        return []
    chosen = [f for f in ("kubeconfig", "in_cluster") if f in spec.model_fields_set and getattr(spec, f)]
    overrides = (patch or {}).get(step.kind)
    override_fields = overrides if isinstance(overrides, dict) else {}

    def located(field: str) -> PathKey:  # where the field is written: the override, or the step itself
        if field in override_fields:
            return ("environments", env.name, "steps", step.name, step.kind, field)
        return ("steps", index, step.kind, field)

    return [
        sdoc.problem(
            located(field),
            f"{env.name}'s cluster is set by the application (env.KUBECONFIG), so this step cannot choose its own",
            f"remove `{field}`; to deploy elsewhere, the platform team changes {env.name}'s KUBECONFIG",
        )
        for field in chosen
    ]


RuleT = TypeVar("RuleT", bound=RuleRef)


def _inline_protection(rule: RuleT, app: Application) -> RuleT:
    """Inline a referenced protection: its kind, plus arguments with defaults applied."""
    if rule.use is None:
        return rule
    protection = app.protections[rule.use]
    args = {k: v for k, v in protection.args.items() if v is not None} | dict(rule.args)
    update = {protection.kind: protection.spec, "args": args, "name": rule.label, "use": None}
    # The protection's deprecated `attempts`, unless the rule sets failures_allowed itself.
    from_attempts = protection.http.failures_allowed_from_attempts if protection.http else None  # deprecated
    if from_attempts is not None and "failures_allowed" not in rule.model_fields_set:
        update["failures_allowed"] = from_attempts
    # model_copy, not validation: a resolved rule has both a kind and arguments.
    return rule.model_copy(update=update)


def _deep_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = _deep_merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(patch)
