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
