"""prodline's config models: the single source of truth for both files.

* :mod:`.application` -- the application file (environments and their rules)
* :mod:`.service` -- the service file (parameters, steps, overrides)
* :mod:`.steps`, :mod:`.rules` -- step and rule kinds, each a model that declares its
  capabilities (:class:`StepSpec`, :class:`RuleSpec`); their docstrings say how to add one
* :mod:`.loader` -- reading files, and the checks one file allows on its own
* :mod:`.problems` -- pydantic's errors as located problems (``file:line: field: message``)
* :mod:`.resolve` -- a service against its application: overrides, protections, templates
* :mod:`.release` -- a release's request (no policy) and the plan it resolves to
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names load on first use: importing one model (as every CLI command does, through
# prodline.contracts) must not build every model and load YAML (about 90 ms at start-up).
_WHERE = {
    "Application": "application",
    "Environment": "application",
    "ConfigError": "errors",
    "Problem": "errors",
    "load_project": "loader",
    "validate_files": "loader",
    "BundleRef": "release",
    "EnvironmentRun": "release",
    "ReleasePlan": "release",
    "ReleaseRequest": "release",
    "build_plan": "release",
    "load_plan": "release",
    "release_id": "release",
    "Project": "resolve",
    "Check": "rules",
    "Lifecycle": "rules",
    "OnFailure": "rules",
    "Precondition": "rules",
    "Protection": "rules",
    "RuleSpec": "rules",
    "rule_kinds": "rules",
    "Parameter": "service",
    "Service": "service",
    "CommandStep": "steps",
    "Step": "steps",
    "StepSpec": "steps",
    "step_kinds": "steps",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .application import Application, Environment
    from .errors import ConfigError, Problem
    from .loader import load_project, validate_files
    from .release import BundleRef, EnvironmentRun, ReleasePlan, ReleaseRequest, build_plan, load_plan, release_id
    from .resolve import Project
    from .rules import Check, Lifecycle, OnFailure, Precondition, Protection, RuleSpec, rule_kinds
    from .service import Parameter, Service
    from .steps import CommandStep, Step, StepSpec, step_kinds

__all__ = [
    "Application",
    "BundleRef",
    "Check",
    "CommandStep",
    "ConfigError",
    "Environment",
    "EnvironmentRun",
    "Lifecycle",
    "OnFailure",
    "Parameter",
    "Precondition",
    "Problem",
    "Project",
    "Protection",
    "ReleasePlan",
    "ReleaseRequest",
    "RuleSpec",
    "Service",
    "Step",
    "StepSpec",
    "build_plan",
    "load_plan",
    "load_project",
    "release_id",
    "rule_kinds",
    "step_kinds",
    "validate_files",
]
