"""``prodline validate`` and ``prodline schema``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from prodline.config import Application, Service, validate_files
from prodline.config.errors import ConfigError, Problem

from . import exit_codes


def run(args) -> int:
    paths = []
    for name in args.files:
        path = Path(name)
        # In a folder, only prodline's files: manifests and other YAML live beside them.
        paths += (
            sorted({*path.rglob("prodline.yaml"), *path.rglob("prodline.*.yaml"), *path.rglob("*.prodline.yaml")})
            if path.is_dir()
            else [path]
        )
    if not paths:
        message = f"no prodline files found in {', '.join(args.files)}"
        print(json.dumps({"valid": False, "files": [], "problems": [], "error": message}) if args.json else message)
        return exit_codes.INVALID
    problems = validate_files(paths)
    problems += _manifest_problems(paths, {p.file for p in problems})
    if args.json:
        print(
            json.dumps(
                {"valid": not problems, "files": [str(p) for p in paths], "problems": [p.to_json() for p in problems]},
                indent=2,
            )
        )
    else:
        for problem in problems:
            print(problem)
        files = len({p.file for p in problems})
        summary = f"{len(problems)} problem(s) in {files} file(s)" if problems else f"{len(paths)} file(s) valid"
        print(summary)
    return exit_codes.INVALID if problems else exit_codes.SUCCEEDED


def _manifest_problems(paths: list[Path], broken: set[str]) -> list[Problem]:
    """Kubernetes manifests of the service files that are valid themselves (checked offline)."""
    from prodline.client.prepare import manifest_check

    problems: list[Problem] = []
    for path in paths:
        if str(path) in broken:
            continue
        with contextlib.suppress(ConfigError):  # an application file: no manifests
            problems += manifest_check(path)
    return problems


def schema(args) -> int:
    schemas = {
        "application": Application.model_json_schema(by_alias=True),
        "service": Service.model_json_schema(by_alias=True),
    }
    for name, value in schemas.items():
        value["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        value["title"] = f"prodline {name} file"
    print(json.dumps(schemas[args.kind] if args.kind else schemas, indent=2))
    return exit_codes.SUCCEEDED
