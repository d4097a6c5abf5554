"""The ``terraform`` step: plan before approval, then apply exactly that plan.

* **plan**: ``init``, select (or create) the workspace, ``plan -out``; the plan
  file goes to the artifact store (it can hold secrets), history gets its key,
  its SHA-256 and a summary (add / change / destroy, with addresses).
* **apply**: fetch the plan file, check its SHA-256 against the approved one,
  ``apply PLANFILE``. Terraform refuses a stale plan; that surfaces as a
  ``StalePlan`` error and the workflow re-plans (and asks again) or fails;
  unless this is a retry and nothing is left to change (an earlier attempt
  applied the plan and died before reporting it), which counts as applied.
  Progress (resources completed) goes into heartbeats; cancelling sends
  SIGINT, like Ctrl-C, so Terraform writes its state and releases the lock.
* **fetch**: ``plan -detailed-exitcode``: does live infrastructure differ?

State never lives in the module's folder, which is a throwaway copy of the
release's bundle, new for every attempt (maybe on another worker): a module
with no backend, or the local one, keeps its state in the worker's data
directory (``PRODLINE_TERRAFORM_DATA_DIR``, default
``~/.local/state/prodline/terraform``) under
``state/APPLICATION/SERVICE/ENVIRONMENT/STEP/`` (``workspaces/NAME/`` below
that for each workspace), through an override file
(:mod:`~prodline.activities.terraform.backend`). A module that declares
another backend (``s3``, ``remote``, ``cloud``) keeps it: that is how several
workers share state. What ``init`` writes (``TF_DATA_DIR``: providers,
modules, backend settings) is kept under ``init/`` with the same key plus the
workspace, so a new copy reuses downloaded providers and two environments
never share ``.terraform/``. A release without a bundle (started before
bundles) runs in the service's own folder: prodline leaves no file there, and
state the folder already holds stays where it is.

Secret parameters reach Terraform as ``TF_VAR_<name>``; credentials come from
the worker's environment; neither is ever in history or logs. Plans and
applies wait for a held state lock (``PRODLINE_TERRAFORM_LOCK_TIMEOUT`` on the
worker, default 2m), so a retry outlasts a cut-off attempt's Terraform unwinding.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from prodline.artifacts.store import ArtifactStore
from prodline.config.durations import parse_duration
from prodline.config.steps import TerraformStep
from prodline.contracts import NON_RETRYABLE_CONFIG, STALE_PLAN, StepResult, StepRun

from ..context import WorkerContext
from ..process import redact
from ..terraform import (
    DEFAULT_LOCK_TIMEOUT,
    OVERRIDE_FILE,
    StalePlanError,
    TerraformCli,
    TerraformError,
    TerraformNotFoundError,
    declared_backend,
    find_terraform,
    local_state_override,
)
from .base import StepRunner, applied, approved_plan_file, saved_plan, scratch_file

log = structlog.get_logger("prodline.steps.terraform")

LOCK_TIMEOUT_VARIABLE = "PRODLINE_TERRAFORM_LOCK_TIMEOUT"
DATA_DIR_VARIABLE = "PRODLINE_TERRAFORM_DATA_DIR"


def terraform_data_dir() -> Path:
    """The worker's Terraform data: local state (``state/``) and what init writes (``init/``).
    State is not a cache: the default is beside the artifact store, not in ``~/.cache``."""
    return Path(os.environ.get(DATA_DIR_VARIABLE) or Path.home() / ".local/state/prodline/terraform")


def local_state_dir(application: str, service: str, environment: str, step: str) -> Path:
    """Where a step's local-backend state lives on this worker: ``terraform.tfstate`` for the
    default workspace, ``workspaces/NAME/terraform.tfstate`` for the others."""
    return terraform_data_dir() / "state" / application / service / environment / step


def init_data_dir(application: str, service: str, environment: str, step: str, workspace: str) -> Path:
    """``TF_DATA_DIR`` of a step's workspace: providers, modules and backend settings, reused by
    every attempt's new copy (safe to delete). Names in the key are validated by the config; a
    templated workspace name might hold anything, so an unusual one is hashed."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", workspace):
        workspace = "ws-" + hashlib.sha256(workspace.encode()).hexdigest()[:16]
    return terraform_data_dir() / "init" / application / service / environment / step / workspace


def lock_timeout_from_env() -> timedelta:
    """How long plans and applies wait for a held state lock: the worker's setting, else the default."""
    value = os.environ.get(LOCK_TIMEOUT_VARIABLE)
    if not value:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ApplicationError(
            f"{LOCK_TIMEOUT_VARIABLE}={value!r} on the worker: {exc}", type=NON_RETRYABLE_CONFIG, non_retryable=True
        ) from None


class _TerraformCall:
    """Everything one step's Terraform commands need, resolved from the step and the release."""

    def __init__(self, run: StepRun, spec: TerraformStep, store: ArtifactStore | None, lock_timeout: timedelta):
        ctx = WorkerContext(run.context, store)
        self.spec = spec
        workdir = ctx.workdir(spec.dir)
        self.workspace = ctx.render(spec.workspace)
        try:
            binary = find_terraform(ctx.render(spec.binary) if spec.binary else None)
        except TerraformNotFoundError as exc:
            raise ApplicationError(str(exc), type=NON_RETRYABLE_CONFIG, non_retryable=True) from None
        secrets = ctx.secret_values()
        self.masked = [*secrets.values(), *ctx.sensitive_values().values()]
        env = ctx.process_env(spec.env, secrets)
        env.update({f"TF_VAR_{name}": value for name, value in secrets.items()})
        r = run.context
        self.step_name = run.step.name
        self.state_dir = local_state_dir(r.application, r.service, r.environment, run.step.name)
        env["TF_DATA_DIR"] = str(init_data_dir(r.application, r.service, r.environment, run.step.name, self.workspace))
        # Without a bundle the folder is the service's own checkout (a release started before
        # bundles), not a copy: prodline leaves no file in it.
        self.own_folder = r.bundle is None
        env.pop("TF_WORKSPACE", None)  # we select the workspace; Terraform refuses to switch when this is set
        self.workdir = workdir
        self.cli = TerraformCli(binary, workdir, env, self.masked, lock_timeout)
        self.variables: dict[str, Any] = {
            k: ctx.render(v) if isinstance(v, str) else v for k, v in spec.variables.items()
        }
        self.var_files = [ctx.render(f) for f in spec.var_files]

    @contextlib.asynccontextmanager
    async def prepared(self) -> AsyncIterator[None]:
        """Ready for plan, apply or drift: local state kept outside the folder, ``init``, the workspace
        selected; Terraform's errors inside mapped by :meth:`failures`. Idempotent, so safe on every attempt.

        ``init -reconfigure`` (python-terraform's default) every time: each attempt's copy is new,
        and the settings init keeps in TF_DATA_DIR may come from another bundle; never migrate.
        """
        with self.failures():
            override = await asyncio.to_thread(self._override)  # reads every .tf file: off the event loop
            with self._override_file(override):
                await self.cli.init(self.spec.backend_config or None)
                await self.cli.select_workspace(self.workspace)
                yield

    @contextlib.contextmanager
    def _override_file(self, override: str | None) -> Iterator[None]:
        """The override in the folder while Terraform runs: left in a bundle's copy (thrown away
        with it), removed from a service's own folder."""
        path = Path(self.workdir) / OVERRIDE_FILE
        if override is None:
            # One left behind (a worker killed mid-step in a service's own folder, then bundled)
            # would turn the module's own backend into ours.
            path.unlink(missing_ok=True)
            yield
            return
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # state can hold secrets
        path.write_text(override)
        try:
            yield
        finally:
            if self.own_folder:
                path.unlink(missing_ok=True)

    def _override(self) -> str | None:
        """The override file's text for a local backend, or None: the module's state lives elsewhere."""
        backend = declared_backend(self.workdir)
        if not backend.is_local:
            return None
        for key in ("path", "workspace_dir"):
            given = self.spec.backend_config.get(key)
            if given is not None and not Path(given).is_absolute() and not self.own_folder:
                raise ApplicationError(
                    f"step {self.step_name}: backend_config {key}={given!r} is a relative path: the module's "
                    "folder is a new copy for every attempt, so the state would be lost. Give an absolute "
                    f"path, or leave {key} out: prodline keeps local state in {self.state_dir}",
                    type=NON_RETRYABLE_CONFIG,
                    non_retryable=True,
                )
        if self.own_folder and (held := _state_in_folder(self.workdir, backend.local_paths())):
            # A release started before bundles: finish it against the state it planned with.
            log.warning(
                "terraform.state_in_module_folder",
                state=str(held),
                move_to=str(self.state_dir),
                hint="move it there (workspaces/NAME/terraform.tfstate per workspace) before the next release",
            )
            return None
        return local_state_override(backend, self.state_dir)

    async def drifted(self) -> bool:
        return await self.cli.drift(self.variables, self.var_files)

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """Terraform's errors as Temporal sees them: stale plan, configuration (no retry), or transient."""
        try:
            yield
        except StalePlanError as exc:
            raise ApplicationError(
                f"the approved plan is stale: the state changed after it was made ({redact(str(exc), self.masked)})",
                type=STALE_PLAN,
                non_retryable=True,
            ) from None
        except TerraformError as exc:
            message = redact(str(exc), self.masked)
            if exc.kind == "config":
                raise ApplicationError(message, type=NON_RETRYABLE_CONFIG, non_retryable=True) from None
            raise ApplicationError(message, type="TerraformTransient") from None


class TerraformRunner(StepRunner[TerraformStep]):
    spec_type = TerraformStep

    def __init__(self, store: ArtifactStore | None = None, lock_timeout: timedelta | None = None):
        self.store = store  # None: the default store, looked up when a step runs
        self.lock_timeout = lock_timeout  # None: the worker's PRODLINE_TERRAFORM_LOCK_TIMEOUT, else 2m

    def _call(self, run: StepRun, spec: TerraformStep) -> _TerraformCall:
        lock_timeout = self.lock_timeout if self.lock_timeout is not None else lock_timeout_from_env()
        return _TerraformCall(run, spec, self.store, lock_timeout)

    async def plan(self, run: StepRun, spec: TerraformStep) -> StepResult:
        call = self._call(run, spec)
        async with call.prepared():
            with scratch_file("plan.tfplan") as planfile:
                summary = await call.cli.plan(planfile, call.variables, call.var_files)
                resources = "\n".join(f"{'/'.join(r['actions'])}: {r['address']}" for r in summary.resources)
                log.info(
                    "terraform.plan",
                    release=run.context.release_id,
                    environment=run.context.environment,
                    step=run.step.name,
                    add=summary.add,
                    change=summary.change,
                    destroy=summary.destroy,
                )
                return saved_plan(
                    run,
                    self.store,
                    planfile,
                    summary=f"{summary.add} to add, {summary.change} to change, {summary.destroy} to destroy",
                    output=redact(resources or "no resource changes", call.masked),
                    changed=summary.has_changes,
                )

    async def apply(self, run: StepRun, spec: TerraformStep) -> StepResult:
        call = self._call(run, spec)
        with approved_plan_file(run, self.store, "approved.tfplan") as planfile:
            async with call.prepared():
                try:
                    result = await call.cli.apply(planfile)
                    summary, output = f"applied: {result.completed} resource action(s) completed", result.output
                except StalePlanError as exc:
                    if not await self._applied_by_an_earlier_attempt(call):
                        raise
                    summary, output = (
                        f"applied by attempt {activity.info().attempt - 1} or earlier (nothing left to change)",
                        exc.output,
                    )
                    log.info(
                        "terraform.already_applied",
                        release=run.context.release_id,
                        environment=run.context.environment,
                        step=run.step.name,
                        attempt=activity.info().attempt,
                    )
                found = await call.cli.outputs()
        return applied(
            run,
            self.store,
            summary=summary,
            output="\n".join(output.splitlines()[-20:]),
            values={name: o["value"] for name, o in found.items()},
            sensitive={name for name, o in found.items() if o["sensitive"]},
            masked=call.masked,
        )

    @staticmethod
    async def _applied_by_an_earlier_attempt(call: _TerraformCall) -> bool:
        """On a retry, a "stale" plan may be this very plan, applied by an attempt that died
        before it could report success: the state moved on, to what was approved. Then
        nothing is left to change, and the step is done; anything else stays stale."""
        return activity.info().attempt > 1 and not await call.drifted()

    async def fetch(self, run: StepRun, spec: TerraformStep) -> StepResult:
        call = self._call(run, spec)
        async with call.prepared():
            drifted = await call.drifted()
        return StepResult(
            summary="live infrastructure differs from the configuration" if drifted else "in sync", changed=drifted
        )


def _state_in_folder(workdir: str, paths: dict[str, str]) -> Path | None:
    """Local state the module's own folder already holds (at the backend's relative paths), if any."""
    for relative in paths.values():
        candidate = Path(workdir) / relative
        if not Path(relative).is_absolute() and candidate.exists():
            return candidate
    return None
