"""Rules that gate an environment: preconditions and checks.

* A **precondition** is a gate evaluated once, in order, before deploying:
  an approval, "previous environment stable", a deploy window, or any check.
* A **check** runs at chosen points of an environment's lifecycle (``when``):
  before approval, before deploying, and after deploying, where it can keep
  watching for a while (``for``).
* A **protection** is a check defined once in the application file and
  referenced from environments with ``use:`` and arguments in ``with:``.

Every rule has exactly one *kind* field. Kinds are :class:`RuleSpec` models in
this module, which declare what the workflow needs to know about them
(``evaluation_budget``, ``recheck_before_deploy``), and evaluators under
``activities/rules/``; the workflow treats all kinds alike, except approvals,
which are decisions by people (signals), not evaluations.

Adding a rule kind:

1. a ``RuleSpec`` subclass here (its fields are the YAML keys; declare
   ``evaluation_budget``, and ``recheck_before_deploy`` if it can stop holding
   while the release waits for people),
2. one field ``NAME: NewRule | None = None`` on :class:`RuleKinds` (usable as a
   check and a precondition) or on :class:`Precondition` (preconditions only);
   ``CHECK_KINDS``, ``PRECONDITION_KINDS``, :func:`rule_kinds` and the JSON
   Schema's "exactly one kind" follow from it,
3. one evaluator module under ``activities/rules/`` and one registration line in
   the activities' evaluator registry (a test fails while a kind has none),
4. its row in the README's table of rule kinds.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from datetime import timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .base import KindModel, Model, Name, ParamName, ScalarValue, TimeZone, kind_fields, one_of
from .durations import Duration, PositiveDuration
from .freezes import ScheduledFreeze

# An http(s) URL, or a template that renders to one; templates may sit anywhere, spaced or not.
# The two kinds of piece cannot overlap (a lone `{` is no URL character), which keeps
# backtracking regex engines (editors use the exported JSON Schema) linear.
_TEMPLATE = r"\{\{[^{}]*\}\}"
_PIECE = rf"({_TEMPLATE}|[^\s{{])"
_URL = rf"^(https?://{_PIECE}+|{_TEMPLATE}{_PIECE}*)$"
Url = Field(pattern=_URL, description="http(s) URL (templates allowed).")

# For kinds whose one evaluation has no timeout of its own: reading the ledger, the clock.
DEFAULT_EVALUATION_BUDGET = timedelta(minutes=5)


class RuleSpec(Model):
    """What every rule kind declares. Pure: the deterministic workflow reads these."""

    # Whether the rule is evaluated again right before the first step is applied,
    # because it can stop holding while the release waits for people.
    recheck_before_deploy: ClassVar[bool] = False
    # Whether the worker running the release evaluates it, as a local activity: for kinds that read
    # only the clock and Temporal, so a remote activity's round trip (and the environment's own
    # task queue) buys nothing. Every environment starts with one (the freeze gate).
    evaluated_locally: ClassVar[bool] = False

    @property
    @abstractmethod
    def evaluation_budget(self) -> timedelta:
        """The longest one evaluation may take (the evaluator activity's time limit, plus slack)."""


class CommandRule(RuleSpec):
    """A legacy check: a shell command that passes when it exits 0."""

    run: str = Field(description="Shell command; exit 0 passes, anything else fails.")
    workdir: str = Field(default=".", description="Working directory, relative to the application file.")
    env: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveDuration = Field(default=timedelta(minutes=5), description="Longest one evaluation may take.")

    @property
    def evaluation_budget(self) -> timedelta:
        return self.timeout


class AlertsRule(RuleSpec):
    """No alerts firing in Alertmanager (API v2) that match the matchers."""

    url: str = Url
    matchers: list[str] | dict[str, str] = Field(
        description="Alertmanager matchers, e.g. ['service=\"checkout\"'] or {service: checkout}."
    )
    include_silenced: bool = Field(default=False, description="Also count silenced and inhibited alerts.")
    timeout: PositiveDuration = Field(default=timedelta(seconds=10), description="HTTP timeout.")

    @property
    def evaluation_budget(self) -> timedelta:
        return self.timeout

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: list[str] | dict[str, str]) -> list[str]:
        if isinstance(value, dict):
            value = [f'{k}="{v}"' for k, v in value.items()]
        if not value:
            raise ValueError("give at least one matcher, or every alert in Alertmanager would count")
        for matcher in value:
            if not re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*(=~|!~|!=|=)\s*\S", matcher):
                raise ValueError(f'{matcher!r} is not a matcher like service="checkout"')
        return value


class PrometheusRule(RuleSpec):
    """A PromQL expression whose every sample must meet a condition."""

    url: str = Url
    query: str = Field(min_length=1, description="PromQL, evaluated as an instant query.")
    condition: str = Field(
        pattern=r"^\s*(<=|>=|==|!=|<|>)\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$",
        description="Comparison each sample must meet, e.g. '< 0.01'.",
    )
    no_data: Literal["pass", "fail", "inconclusive"] = Field(
        default="inconclusive", description="Outcome when the query returns nothing."
    )
    timeout: PositiveDuration = Field(default=timedelta(seconds=10), description="HTTP timeout.")

    @property
    def evaluation_budget(self) -> timedelta:
        return self.timeout


class HttpRule(RuleSpec):
    """An HTTP endpoint answers with the expected status (and body)."""

    url: str = Url
    status: int = Field(default=200, ge=100, le=599)
    body: str | None = Field(default=None, description="Regular expression the body must contain.")
    # Deprecated: each evaluation makes one request; blips are the rule's `failures_allowed`
    # (the engine's one retry layer). `attempts: N` (3 when not given, as it always was) counts as
    # `failures_allowed: N-1` unless the rule sets failures_allowed itself.
    attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Deprecated: use the rule's failures_allowed (attempts: N counts as failures_allowed: N-1).",
        json_schema_extra={"deprecated": True},
    )
    retry_interval: Duration = Field(
        default=timedelta(seconds=1),
        description="Deprecated and ignored: evaluations are the rule's `interval` apart.",
        json_schema_extra={"deprecated": True},
    )
    timeout: PositiveDuration = Field(default=timedelta(seconds=10), description="HTTP timeout of the request.")

    @property
    def evaluation_budget(self) -> timedelta:
        return self.timeout

    @property
    def failures_allowed_from_attempts(self) -> int:
        """The failures the deprecated `attempts` tolerated: all tries of one evaluation but the last."""
        return self.attempts - 1

    @field_validator("body")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"body is not a valid regular expression: {exc}") from None
        return value


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class WindowRule(RuleSpec):
    """Deploy only on these days and hours, in this time zone; otherwise wait."""

    # Re-checked right before the first step is applied: approvals can take long.
    recheck_before_deploy: ClassVar[bool] = True

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    hours: str = Field(
        default="00:00-24:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$",
        description="HH:MM-HH:MM, local time; 24:00 for the end of the day.",
    )
    timezone: TimeZone = "UTC"

    @property
    def evaluation_budget(self) -> timedelta:
        return DEFAULT_EVALUATION_BUDGET  # reads the clock

    @model_validator(mode="after")
    def _order(self) -> WindowRule:
        start, end = self.hours.split("-")
        if start >= end:
            raise ValueError(f"hours {self.hours!r}: the window must end after it starts, within one day")
        return self


class ApprovalRule(RuleSpec):
    """People approve (or reject) with `prodline approve|reject`."""

    approvers: list[str] = Field(default_factory=list, description="Who may approve; empty: anyone.")
    min_approvers: int = Field(default=1, ge=1, le=20, description="Distinct approvals needed.")
    forbid_initiator: bool = Field(default=False, description="The person who started the release cannot approve it.")
    timeout: PositiveDuration = Field(
        default=timedelta(hours=24), description="The release ends as timed out after this."
    )

    @property
    def evaluation_budget(self) -> timedelta:
        # Never evaluated by an activity: people decide, by signal. `timeout` is how long
        # they have, not how long an evaluation may take.
        return DEFAULT_EVALUATION_BUDGET

    def unmeetable_for(self, initiator: str) -> str:
        """Why no set of decisions can meet this rule in a release ``initiator`` starts ("" if some can).

        The list's own size is checked when the file loads; the initiator is known only at start.
        An empty list means anyone, so enough people can always approve.
        """
        if not (self.forbid_initiator and self.approvers and initiator in self.approvers):
            return ""
        left = len(set(self.approvers) - {initiator})
        if left >= self.min_approvers:
            return ""
        return (
            f"{initiator} started this release and may not approve it; "
            f"{left} approver{'' if left == 1 else 's'} left, {self.min_approvers} needed"
        )

    @model_validator(mode="after")
    def _enough_people(self) -> ApprovalRule:
        if self.approvers and self.min_approvers > len(set(self.approvers)):
            raise ValueError(
                f"min_approvers is {self.min_approvers} but only {len(set(self.approvers))} approvers are listed"
            )
        return self


class StableRule(RuleSpec):
    """The same version is live in an earlier environment, for at least `soak`."""

    environment: Name
    soak: Duration = Field(default=timedelta(0), description="How long it must have been live there.")

    @property
    def evaluation_budget(self) -> timedelta:
        return DEFAULT_EVALUATION_BUDGET  # reads the ledger


class FreezeRule(RuleSpec):
    """No freeze holds the environment: none of its scheduled freezes, no manual one (`prodline freeze`).

    Put first in every environment by the resolver, with that environment's scheduled freezes;
    application files do not write it. Defined here, not in ``freezes.py``: it is a RuleSpec,
    and ``freezes.py`` must not import this module, which imports it.
    """

    # Re-checked right before the first step is applied: someone may freeze while people approve.
    recheck_before_deploy: ClassVar[bool] = True
    evaluated_locally: ClassVar[bool] = True  # the clock and a query of the application workflow

    application: Name
    environment: Name
    scheduled: list[ScheduledFreeze] = Field(default_factory=list, description="The environment's scheduled freezes.")

    @property
    def evaluation_budget(self) -> timedelta:
        return DEFAULT_EVALUATION_BUDGET  # reads the clock and queries the application workflow


class Lifecycle(StrEnum):
    before_approval = "before_approval"
    before_deploy = "before_deploy"
    after_deploy = "after_deploy"


class OnFailure(StrEnum):
    wait = "wait"  # block and re-evaluate until it passes or `timeout` ends
    fail = "fail"  # fail the release at once
    pause = "pause"  # hold the release until someone resumes (approve) or rejects it


class RuleKinds(KindModel):
    """The kind fields shared by checks, preconditions and protections."""

    kind_base: ClassVar[type[BaseModel]] = RuleSpec
    kind_noun: ClassVar[str] = "rule"

    command: CommandRule | None = None
    alerts: AlertsRule | None = None
    prometheus: PrometheusRule | None = None
    http: HttpRule | None = None
    window: WindowRule | None = None

    @property
    def spec(self) -> RuleSpec:
        """The kind's config, with its declarations (``evaluation_budget``, ...)."""
        return getattr(self, self.kind)


class RuleRef(RuleKinds):
    """A rule inline (one kind field) or a reference to a protection (``use``)."""

    name: str | None = Field(default=None, description="Display name; defaults to the kind or the protection used.")
    use: Name | None = Field(default=None, description="Name of a protection defined in the application file.")
    args: dict[ParamName, ScalarValue] = Field(
        default_factory=dict, alias="with", description="Arguments (`{{ args.NAME }}`)."
    )
    timeout: PositiveDuration = Field(
        default=timedelta(minutes=30),
        description="How long `on_failure: wait` keeps waiting before the release times out; "
        "with `on_failure: pause`, how long people have to resume or reject (unset: 7 days).",
    )
    interval: PositiveDuration = Field(
        default=timedelta(seconds=30), description="Time between evaluations while waiting or watching."
    )
    failures_allowed: int = Field(
        default=0, ge=0, le=100, description="Consecutive failures tolerated before acting on one."
    )

    @model_validator(mode="before")
    @classmethod
    def _attempts_as_failures_allowed(cls, data: Any) -> Any:
        """The http rule's deprecated `attempts: N` (default 3) tolerates N-1 failures, unless failures_allowed is given."""
        http = data.get("http") if isinstance(data, dict) else None
        if isinstance(http, dict) and "failures_allowed" not in data:
            attempts = http.get("attempts", 3)
            if isinstance(attempts, int):
                return {**data, "failures_allowed": max(attempts - 1, 0)}
        return data

    @model_validator(mode="after")
    def _kind_or_use(self) -> RuleRef:
        inline = [k for k in self.kinds if getattr(self, k, None) is not None]
        if self.use is None:
            one_of(self, self.kinds, "rule (or `use: PROTECTION`)")
        elif inline:
            raise ValueError(f"`use` references a protection, so {', '.join(inline)} cannot be given here too")
        return self

    @property
    def label(self) -> str:
        return self.name or self.use or self.kind


class Precondition(RuleRef):
    """A gate before deploying, evaluated once in order."""

    freeze: FreezeRule | None = None
    approval: ApprovalRule | None = None
    stable: StableRule | None = None
    on_failure: OnFailure = Field(default=OnFailure.fail, description="fail, wait (until `timeout`) or pause.")


class Check(RuleRef):
    """A check at chosen points of the environment's lifecycle."""

    when: list[Lifecycle] = Field(
        default_factory=lambda: [Lifecycle.before_deploy, Lifecycle.after_deploy], min_length=1
    )
    watch_for: Duration = Field(
        default=timedelta(0), alias="for", description="After deploying, keep checking for this long (0: check once)."
    )
    on_failure: OnFailure | None = Field(
        default=None, description="Default: wait before deploying, fail after deploying."
    )

    def failure_behaviour(self, lifecycle: Lifecycle) -> OnFailure:
        if lifecycle is Lifecycle.after_deploy:
            # The version is live: there is nothing left to wait for, so `wait` fails too.
            return OnFailure.pause if self.on_failure is OnFailure.pause else OnFailure.fail
        return self.on_failure or OnFailure.wait


class Protection(RuleKinds):
    """A reusable check, defined once in the application file."""

    description: str = ""
    args: dict[ParamName, ScalarValue | None] = Field(
        default_factory=dict, description="Arguments it accepts, with defaults (null: required)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Protection:
        one_of(self, self.kinds, "protection")
        return self


def rule_kinds() -> dict[str, type[RuleSpec]]:
    """Kind name -> its model, for every rule kind (checks' kinds first)."""
    return kind_fields(Precondition, RuleSpec)


CHECK_KINDS: tuple[str, ...] = Check.kinds
PRECONDITION_KINDS: tuple[str, ...] = Precondition.kinds
