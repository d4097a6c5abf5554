"""Read config files into models, with every problem located in its file.

Loading is all-or-nothing: either the application and the service (with
every environment's merged steps and resolved rules) are valid, or a
:class:`ConfigError` lists every problem found, each as
``file:line: field: message (hint: ...)``.

Here: reading files and the checks one file allows on its own. Turning
pydantic's errors into located problems is :mod:`.problems`; a service against
its application (overrides, protections, template names) is :mod:`.resolve`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from .application import Application
from .errors import ConfigError, Problem
from .problems import dedupe, known_hint, parse_model
from .resolve import Project, combine
from .rules import Protection, RuleRef
from .service import Service
from .templates import BUILTIN_NAMES, unknown_names
from .yamlsource import Document, PathKey, parse_yaml, read_yaml

__all__ = [
    "APPLICATION_FILE",
    "file_kind",
    "find_application_file",
    "load_application",
    "load_application_text",
    "load_project",
    "load_service",
    "validate_files",
]

APPLICATION_FILE = "prodline.yaml"


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
    return _application_of(read_yaml(path))


def load_application_text(text: str, path: str) -> tuple[Application, Document]:
    """An application file given as text (``path`` only names it in problems).

    Pure: no file is read, which is what lets the application workflow validate a
    change it is sent (``workflows/application.py``) with the same checks as ``validate``.
    """
    return _application_of(parse_yaml(text, Path(path)))


def _application_of(doc: Document) -> tuple[Application, Document]:
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
                doc.problem(("protections", name), f"unknown template name {{{{ {bad} }}}}", known_hint(known))
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
        return [doc.problem(loc, f"unknown template name {{{{ {b} }}}}", known_hint(known)) for b in bad]
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


# --- files (release start, prodline validate) -------------------------------------------


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
    return dedupe(problems)
