"""The service file: parameters, ordered deploy steps, per-environment overrides.

It lives next to the service's existing manifests and scripts; relative
working directories are resolved from its folder.

.. code-block:: yaml

    service: checkout
    application: shop
    parameters:
      image: {type: image}
    steps:
      - name: deploy
        command: {apply: ./deploy.sh}
    environments:
      production:
        parameters: {replicas: 3}
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import BundleSpec, Model, Name, ParamName, unique_names
from .safety import ReleasePolicy, ServiceRollback
from .steps import Step

ParamType = Literal["string", "int", "image", "secret"]

_IMAGE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[\w][\w.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Parameter(Model):
    """A typed value supplied at release time (or by default / override)."""

    type: ParamType = "string"
    default: str | int | None = None
    description: str = ""
    from_env: str | None = Field(
        default=None, description="For `secret`: the worker's environment variable holding the value."
    )

    @model_validator(mode="after")
    def _secret_rules(self) -> Parameter:
        if self.type == "secret":
            if not self.from_env:
                raise ValueError("a secret parameter needs `from_env: VARIABLE`; its value is read on the worker")
            if not _ENV_VAR.match(self.from_env):
                raise ValueError(f"from_env {self.from_env!r} is not an environment variable name")
            if self.default is not None:
                raise ValueError("a secret cannot have a default: it would be stored in the config")
        elif self.from_env:
            raise ValueError("`from_env` only applies to `type: secret`")
        if self.default is not None:
            self.coerce(self.default)
        return self

    def coerce(self, value: Any) -> str:
        """Check a value against the type; values travel as text."""
        if self.type == "int":
            if isinstance(value, bool) or not re.fullmatch(r"-?\d+", str(value).strip()):
                raise ValueError(f"expected an integer, got {value!r}")
            return str(int(str(value).strip()))
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"expected text, got {value!r}")
        text = str(value)
        if self.type == "image" and not _IMAGE.match(text):
            raise ValueError(f"{text!r} is not an image reference like ghcr.io/acme/app:1.2.3")
        return text


class Override(Model):
    """What changes in one environment."""

    parameters: dict[str, str | int] = Field(default_factory=dict, description="Parameter values for this environment.")
    steps: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per step name, fields merged over the step (nested maps merge)."
    )
    skip: list[Name] = Field(default_factory=list, description="Steps not run in this environment.")
    rollback: ServiceRollback = Field(
        default_factory=ServiceRollback, description="Automatic rollback here (unset: the service's choice)."
    )
    releases: ReleasePolicy | None = Field(default=None, description="Lanes here (unset: the service's choice).")


class Service(Model):
    """Top level of the service file."""

    service: Name = Field(description="Service name.")
    application: Name = Field(description="The application (in its application file) this service belongs to.")
    description: str = ""
    bundle: BundleSpec = Field(
        default_factory=BundleSpec, description="What `release start` packs: the code every step runs."
    )
    parameters: dict[ParamName, Parameter] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1, description="Deploy steps, run in order in every environment.")
    environments: dict[Name, Override] = Field(default_factory=dict, description="Per-environment overrides.")
    rollback: ServiceRollback = Field(
        default_factory=ServiceRollback,
        description="Whether failures roll back by themselves (unset: as each environment of the application says).",
    )
    releases: ReleasePolicy = Field(
        default_factory=ReleasePolicy, description="How this service's releases share an environment."
    )

    def automatic_rollback(self, environment: str, platform_default: bool) -> bool:
        """The service's override for the environment, else its own choice, else the application's."""
        override = self.environments.get(environment)
        for choice in (override.rollback.automatic if override else None, self.rollback.automatic):
            if choice is not None:
                return choice
        return platform_default

    def release_policy(self, environment: str) -> ReleasePolicy:
        override = self.environments.get(environment)
        return override.releases if override and override.releases else self.releases

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: list[Step]) -> list[Step]:
        return unique_names(steps, "step")
