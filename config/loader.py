"""Load config files into models, with every problem located in its file.

Loading is all-or-nothing: either the application and the service (with
every environment's merged steps and resolved rules) are valid, or a
:class:`ConfigError` lists every problem found, each as
``file:line: field: message (hint: ...)``.
"""

from __future__ import annotations

import copy
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .application import Application, Environment
from .base import NAME_HINT
from .errors import ConfigError, Problem
from .rules import Check, Precondition, Protection, RuleRef
from .service import Service
from .steps import Step
from .templates import BUILTIN_NAMES, outputs_prefix, unknown_names
from .yamlsource import Document, PathKey, read_yaml

APPLICATION_FILE = "prodline.yaml"


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


# --- pydantic errors -> located problems -------------------------------------------------


def _model_at(model: type[BaseModel], loc: PathKey) -> type[BaseModel] | None:
    """The model class whose fields are the YAML keys at ``loc`` (None if not a model)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            if info is None:
                return None
            current = info.annotation
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _fields_at(model: type[BaseModel], loc: PathKey) -> list[str]:
    """Field names (YAML keys) accepted at ``loc`` inside ``model``; [] if unknown."""
    found = _model_at(model, loc)
    return [f.alias or n for n, f in found.model_fields.items()] if found else []


def _description(model: type[BaseModel], loc: PathKey) -> str:
    parent = _model_at(model, loc[:-1]) if loc else None
    if parent is None:
        return ""
    info = next((f for n, f in parent.model_fields.items() if loc[-1] in (n, f.alias)), None)
    return (info.description or "") if info else ""


def _unwrap(annotation: Any) -> Any:
    """Strip Optional[...] and Annotated[...] down to the interesting type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, __import__("types").UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = models[0] if models else args[0]
        else:
            return annotation


def _problems_from(exc: ValidationError, doc: Document, model: type[BaseModel], prefix: PathKey) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        full = (*prefix, *loc)
        message = err["msg"].removeprefix("Value error, ")
        hint = ""
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message = f"unknown key {loc[-1]!r}"
            hint = (
                f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(allowed)}" if allowed else "")
            )
        elif kind == "missing":
            message = "this field is required"
            hint = f"add `{loc[-1]}:`" if loc else ""
        elif kind == "string_pattern_mismatch" and "a-z0-9" in (pattern := str(err.get("ctx", {}).get("pattern", ""))):
            message = f"{err['input']!r} is not a valid name"
            hint = NAME_HINT if "_" not in pattern else "start with a lowercase letter; then letters, digits, _ or -"
        elif kind == "string_pattern_mismatch":
            message = f"{err['input']!r} is not in the expected format"
            hint = _description(model, loc)
        elif kind in ("model_type", "dict_type"):
            message = f"expected a mapping of keys, got {type(err['input']).__name__}"
        problems.append(doc.problem(full, message, hint))
    return problems


def parse_model(doc: Document, model: type[BaseModel], data: Any = None, prefix: PathKey = ()) -> Any:
    """Validate ``data`` (default: the whole document) as ``model``."""
    try:
        return model.model_validate(doc.data if data is None else data)
    except ValidationError as exc:
        raise ConfigError(_problems_from(exc, doc, model, prefix)) from None
    except RecursionError:
        raise ConfigError([doc.problem(prefix, "values nested too deeply")]) from None


# --- single files -----------------------------------------------------------------------


def file_kind(doc: Document) -> str:
    """``service`` or ``application``, from the file's top-level keys."""
    if isinstance(doc.data, dict):
        if "service" in doc.data:
            return "service"
        if "application" in doc.data:
            return "application"
    raise ConfigError(
        [
            doc.problem(
                (),
                "not a prodline file",
                "an application file starts with `application: NAME`, a service file with `service: NAME`",
            )
        ]
    )


def load_application(path: Path) -> tuple[Application, Document]:
    doc = read_yaml(path)
    if file_kind(doc) != "application":
        raise ConfigError([doc.problem(("service",), "expected an application file, got a service file")])
    app = parse_model(doc, Application)
    problems = _check_application(app, doc)
    if problems:
        raise ConfigError(problems)
    return app, doc


def _check_application(app: Application, doc: Document) -> list[Problem]:
    problems = []
    builtin = set(BUILTIN_NAMES)
    for name, protection in app.protections.items():
        known = builtin | {f"args.{a}" for a in protection.args}
        for bad in unknown_names(protection.spec.model_dump(), known):
            problems.append(
                doc.problem(("protections", name), f"unknown template name {{{{ {bad} }}}}", _known_hint(known))
            )
    for i, env in enumerate(app.environments):
        earlier = app.environment_names[:i]
        for j, rule in enumerate(env.preconditions):
            if rule.stable is not None and rule.stable.environment not in earlier:
                hint = (
                    f"earlier environments: {', '.join(earlier)}" if earlier else f"{env.name} is the first environment"
                )
                loc = ("environments", i, "preconditions", j, "stable", "environment")
                problems.append(
                    doc.problem(loc, f"{rule.stable.environment!r} is not an environment before {env.name!r}", hint)
                )
        for list_name in ("preconditions", "checks"):
            for j, rule in enumerate(getattr(env, list_name)):
                loc = ("environments", i, list_name, j)
                problems += _check_rule(rule, app.protections, doc, loc)
    return problems


def _check_rule(rule: RuleRef, protections: dict[str, Protection], doc: Document, loc: PathKey) -> list[Problem]:
    if rule.use is None:
        known = {*BUILTIN_NAMES, *(f"args.{a}" for a in rule.args)}
        bad = unknown_names(rule.spec.model_dump(), known)
        return [doc.problem(loc, f"unknown template name {{{{ {b} }}}}", _known_hint(known)) for b in bad]
    protection = protections.get(rule.use)
    if protection is None:
        close = difflib.get_close_matches(rule.use, list(protections), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "define it under `protections:` in the application file"
        return [doc.problem((*loc, "use"), f"no protection named {rule.use!r}", hint)]
    problems = []
    for arg in rule.args:
        if arg not in protection.args:
            allowed = ", ".join(protection.args) or "none"
            problems.append(
                doc.problem(
                    (*loc, "with", arg), f"protection {rule.use!r} takes no argument {arg!r}", f"it takes: {allowed}"
                )
            )
    for arg, default in protection.args.items():
        if default is None and arg not in rule.args:
            problems.append(
                doc.problem(
                    (*loc, "with"), f"protection {rule.use!r} needs argument {arg!r}", f"add `with: {{{arg}: ...}}`"
                )
            )
    return problems


def _known_hint(known: typing.Iterable[str]) -> str:
    return "known names: " + ", ".join(sorted(known))


def load_service(path: Path) -> tuple[Service, Document]:
    doc = read_yaml(path)
    if file_kind(doc) != "service":
        raise ConfigError([doc.problem(("application",), "expected a service file, got an application file")])
    return parse_model(doc, Service), doc


def find_application_file(service_file: Path) -> Path | None:
    """The nearest ``prodline.yaml`` in the service file's folder or above."""
    for folder in [service_file.resolve().parent, *service_file.resolve().parents]:
        candidate = folder / APPLICATION_FILE
        if candidate.is_file() and candidate.resolve() != service_file.resolve():
            return candidate
    return None


# --- both files together -----------------------------------------------------------------


def load_project(service_file: Path, application_file: Path | None = None) -> Project:
    """Load a service and its application and check them against each other."""
    service, sdoc = load_service(service_file)
    if application_file is None:
        application_file = find_application_file(service_file)
        if application_file is None:
            raise ConfigError(
                [
                    sdoc.problem(
                        ("application",),
                        f"cannot find the application file for {service.application!r}",
                        f"put a {APPLICATION_FILE} in this folder or above, or name the application file too "
                        "(`prodline validate APP SERVICE`, `release start --app APP`)",
                    )
                ]
            )
    app, adoc = load_application(application_file)
    return combine(app, adoc, service, sdoc)


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
    for env_name in service.environments:
        if app.environment(env_name) is None:
            close = difflib.get_close_matches(env_name, app.environment_names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"environments are: {', '.join(app.environment_names)}"
            problems.append(
                sdoc.problem(
                    ("environments", env_name), f"no environment {env_name!r} in application {app.application!r}", hint
                )
            )
    secrets = {n for n, p in service.parameters.items() if p.type == "secret"}
    known = set(BUILTIN_NAMES) | {f"params.{n}" for n in service.parameters if n not in secrets}
    project = Project(app, service, Path(adoc.path), Path(sdoc.path))
    for env in app.environments:
        env_config, env_problems = _environment_config(env, app, service, sdoc, known, secrets)
        problems += env_problems
        if env_config is not None:
            project.environments.append(env_config)
    if problems:
        raise ConfigError(_dedupe(problems))
    return project


def _environment_config(
    env: Environment, app: Application, service: Service, sdoc: Document, known: set[str], secrets: set[str]
) -> tuple[EnvironmentConfig | None, list[Problem]]:
    override = service.environments.get(env.name)
    problems: list[Problem] = []
    parameters: dict[str, Any] = {n: p.default for n, p in service.parameters.items() if p.default is not None}
    steps_raw = {s.name: (i, sdoc.data["steps"][i]) for i, s in enumerate(service.steps)}
    steps: list[Step] = []
    if override is not None:
        oloc: PathKey = ("environments", env.name)
        for name, value in override.parameters.items():
            param = service.parameters.get(name)
            if param is None:
                problems.append(
                    sdoc.problem(
                        (*oloc, "parameters", name),
                        f"no parameter {name!r} is declared",
                        "declare it under `parameters:`",
                    )
                )
            elif param.type == "secret":
                problems.append(
                    sdoc.problem(
                        (*oloc, "parameters", name),
                        "a secret's value cannot be set in the file",
                        f"set {param.from_env} on the worker",
                    )
                )
            else:
                try:
                    parameters[name] = param.coerce(value)
                except ValueError as exc:
                    problems.append(sdoc.problem((*oloc, "parameters", name), str(exc)))
        for name in [*override.steps, *override.skip]:
            if name not in steps_raw:
                where = "steps" if name in override.steps else "skip"
                problems.append(
                    sdoc.problem((*oloc, where, name), f"no step named {name!r}", f"steps are: {', '.join(steps_raw)}")
                )
    for step in service.steps:
        index, raw = steps_raw[step.name]
        if override is not None and step.name in override.skip:
            continue
        patch = override.steps.get(step.name) if override is not None else None
        if patch:
            merged = _deep_merge(raw, patch)
            loc: PathKey = ("environments", env.name, "steps", step.name)
            try:
                step = Step.model_validate(merged)
            except ValidationError as exc:
                problems += _problems_from(exc, sdoc, Step, loc)
                continue
        earlier = [outputs_prefix(s.name) for s in steps]
        for bad in unknown_names(step.spec.model_dump(), known, earlier):
            hint = (
                f"secrets reach commands only as the environment variable PRODLINE_PARAM_{bad.removeprefix('params.').upper().replace('-', '_')}"
                if bad.startswith("params.") and bad.removeprefix("params.") in secrets
                else _known_hint(known) + (f", and {', '.join(p + 'KEY' for p in earlier)}" if earlier else "")
            )
            problems.append(sdoc.problem(("steps", index), f"unknown template name {{{{ {bad} }}}}", hint))
        steps.append(step)
    preconditions = [_resolve(rule, app) for rule in env.preconditions]
    checks = [_resolve(rule, app) for rule in env.checks]
    if problems:
        return None, problems
    return EnvironmentConfig(env, steps, preconditions, checks, parameters), []


def _resolve(rule: Any, app: Application) -> Any:
    """Inline a referenced protection: its kind, plus arguments with defaults applied."""
    if rule.use is None:
        return rule
    protection = app.protections[rule.use]
    args = {k: v for k, v in protection.args.items() if v is not None} | dict(rule.args)
    # model_copy, not validation: a resolved rule has both a kind and arguments.
    return rule.model_copy(update={protection.kind: protection.spec, "args": args, "name": rule.label, "use": None})


def _deep_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = _deep_merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(patch)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    """Each problem once, however its file was named (a file can be read as given and, found
    again through a service, by its absolute path)."""
    seen, out = set(), []
    for p in problems:
        key = (os.path.realpath(p.file), p.line, p.loc, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# --- many files (prodline validate) --------------------------------------------------------


def validate_files(paths: list[Path]) -> list[Problem]:
    """Validate files of either kind, each service against its application."""
    problems: list[Problem] = []
    apps: dict[str, tuple[Application, Document]] = {}
    services: list[tuple[Service, Document]] = []
    for path in paths:
        try:
            doc = read_yaml(path)
            if file_kind(doc) == "application":
                app, adoc = load_application(path)
                apps[app.application] = (app, adoc)
            else:
                services.append(load_service(path))
        except ConfigError as exc:
            problems += exc.problems
    for service, sdoc in services:
        try:
            if service.application in apps:
                combine(*apps[service.application], service, sdoc)
            else:
                load_project(Path(sdoc.path))
        except ConfigError as exc:
            problems += exc.problems
    return _dedupe(problems)
