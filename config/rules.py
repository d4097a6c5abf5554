"""Rules that gate an environment: preconditions and checks.

* A **precondition** is a one-shot gate evaluated before deploying.
* A **check** runs at one or more points of an environment's lifecycle
  (``when``): before approval, before deploying, and after deploying, where
  it can keep watching for a while (``for``).
* A **protection** is a check defined once in the application file and
  referenced from environments with ``use:`` and arguments in ``with:``.

Every rule has exactly one *kind* field. Kinds are models in this module and
evaluators under ``activities/rules/``; the workflow treats all kinds alike.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import Field, model_validator

from .base import Model, Name, ParamName, ScalarValue, one_of
from .durations import Duration


class CommandRule(Model):
    """A legacy check: a shell command that passes when it exits 0."""

    run: str = Field(description="Shell command; exit 0 passes, anything else fails.")
    workdir: str = Field(".", description="Working directory, relative to the file that declares the rule.")
    env: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = Field(timedelta(minutes=5), description="Longest one evaluation may take.")


RULE_KINDS = ("command",)


class Lifecycle(StrEnum):
    before_approval = "before_approval"
    before_deploy = "before_deploy"
    after_deploy = "after_deploy"


class OnFailure(StrEnum):
    wait = "wait"  # block and re-evaluate until it passes or `timeout` ends
    fail = "fail"  # fail the release at once


class RuleKinds(Model):
    """The kind fields, shared by preconditions, checks and protections."""

    command: CommandRule | None = None

    @property
    def kind(self) -> str:
        return one_of(self, RULE_KINDS, "rule")

    @property
    def spec(self) -> Model:
        return getattr(self, self.kind)


class RuleRef(RuleKinds):
    """A rule inline (one kind field) or a reference to a protection (``use``)."""

    name: str | None = Field(None, description="Display name; defaults to the kind or the protection used.")
    use: Name | None = Field(None, description="Name of a protection defined in the application file.")
    args: dict[ParamName, ScalarValue] = Field(
        default_factory=dict, alias="with", description="Arguments for the protection (`{{ args.NAME }}`)."
    )
    timeout: Duration = Field(
        timedelta(minutes=30), description="How long `on_failure: wait` keeps waiting before the release fails."
    )
    interval: Duration = Field(timedelta(seconds=30), description="Time between evaluations while waiting or watching.")

    @model_validator(mode="after")
    def _kind_or_use(self) -> RuleRef:
        inline = [k for k in RULE_KINDS if getattr(self, k) is not None]
        if self.use is None:
            one_of(self, RULE_KINDS, "rule (or `use: PROTECTION`)")
        elif inline:
            raise ValueError(f"`use` references a protection, so {', '.join(inline)} cannot be given here too")
        return self

    @property
    def label(self) -> str:
        return self.name or self.use or self.kind


class Precondition(RuleRef):
    """A one-shot gate before deploying."""

    on_failure: OnFailure = Field(
        OnFailure.fail, description="fail, or wait (re-evaluating every `interval` until `timeout`)."
    )


class Check(RuleRef):
    """A check at chosen points of the environment's lifecycle."""

    when: list[Lifecycle] = Field(
        default_factory=lambda: [Lifecycle.before_deploy, Lifecycle.after_deploy], min_length=1
    )
    watch_for: Duration = Field(
        timedelta(0), alias="for", description="After deploying, keep checking for this long (0: check once)."
    )
    on_failure: OnFailure | None = Field(None, description="Default: wait before deploying, fail after deploying.")

    def failure_behaviour(self, lifecycle: Lifecycle) -> OnFailure:
        if self.on_failure is not None:
            return self.on_failure
        return OnFailure.fail if lifecycle is Lifecycle.after_deploy else OnFailure.wait


class Protection(RuleKinds):
    """A reusable check, defined once in the application file."""

    description: str = ""
    args: dict[ParamName, ScalarValue | None] = Field(
        default_factory=dict, description="Arguments it accepts, with defaults (null: required)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Protection:
        one_of(self, RULE_KINDS, "protection")
        return self
