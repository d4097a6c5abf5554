"""The application file: ordered environments and the rules that gate them.

.. code-block:: yaml

    application: shop
    environments:
      - name: staging
      - name: production
        preconditions: [...]
        checks: [...]
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import BundleSpec, Model, Name, unique_names
from .rules import Check, Precondition, Protection


class Environment(Model):
    """One environment (release channel), deployed in file order."""

    name: Name
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables for every step and rule run in this environment."
    )
    task_queue: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$",
        description="Task queue this environment's steps and rules run on: workers inside its network, with its "
        "credentials (`prodline worker --task-queue Q`). Unset: the control queue, with the release workflow.",
    )
    preconditions: list[Precondition] = Field(default_factory=list, description="One-shot gates before deploying.")
    checks: list[Check] = Field(default_factory=list, description="Checks before and after deploying.")


class Application(Model):
    """Top level of the application file."""

    application: Name = Field(description="Application name; services refer to it.")
    description: str = ""
    environments: list[Environment] = Field(min_length=1, description="Environments in promotion order.")
    services: list[Name] | None = Field(
        default=None,
        description="The services that may be released under these rules; unset: any service naming this "
        "application. Set it where services of other teams could claim it (shared workers or credentials).",
    )
    bundle: BundleSpec = Field(
        default_factory=BundleSpec, description="The files this application's rules run, registered with it."
    )
    protections: dict[Name, Protection] = Field(
        default_factory=dict, description="Reusable checks, referenced from environments with `use:`."
    )

    @field_validator("environments")
    @classmethod
    def _unique_environments(cls, environments: list[Environment]) -> list[Environment]:
        return unique_names(environments, "environment")

    def environment(self, name: str) -> Environment | None:
        return next((e for e in self.environments if e.name == name), None)

    @property
    def environment_names(self) -> list[str]:
        return [e.name for e in self.environments]
