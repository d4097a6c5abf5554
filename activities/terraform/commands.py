"""The Terraform commands prodline runs, each one argv built by python-terraform and run by ``run_process``.

python-terraform builds every argv (``generate_cmd_string``: ``-k=v`` options,
``IsFlagged`` flags, ``-backend-config=k=v`` pairs) and runs nothing: its own
runner blocks a thread in ``communicate()`` with no per-call environment, so
:func:`prodline.activities.process.run_process` runs every command instead,
with the one cancel policy of all child processes (SIGINT to Terraform's
process group, like Ctrl-C, again soon, SIGKILL after :data:`CANCEL_GRACE`),
heartbeats, masked output, and a guard that stops Terraform if the worker dies.

Plans and applies wait up to ``lock_timeout`` for the state lock
(``-lock-timeout``): a retry after a worker died finds the lock held while the
old Terraform unwinds, and must wait for it rather than fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, Terraform, VariableFiles

from ..process import ProcessResult, run_process
from .diagnostics import error_for, parse_json_diagnostics, parse_progress_line

# Defaults for every call; the worker's own environment and the step's ``env`` win over them.
DEFAULT_ENV = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}
# Terraform needs time to write state and release its lock after SIGINT.
CANCEL_GRACE = timedelta(seconds=60)
# Longer than a cut-off attempt's Terraform takes to unwind (CANCEL_GRACE), short of a stuck lock.
DEFAULT_LOCK_TIMEOUT = timedelta(minutes=2)


def terraform_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """:data:`DEFAULT_ENV` (only where unset) + the worker's environment + ``env`` (TF_VAR_*, credentials)."""
    return {**DEFAULT_ENV, **os.environ, **(env or {})}


class _ArgvBuilder(Terraform):
    """python-terraform as the argv builder only."""

    def read_state_file(self, file_path: str | None = None) -> None:
        self.tfstate = None  # upstream parses ./terraform.tfstate on construction; never needed here


def terraform_argv(binary: str, command: str, *args: str, **options: object) -> list[str]:
    """``[binary, *command.split(), *options, *args]`` by python-terraform's ``generate_cmd_string``.

    ``command`` may hold a subcommand (``"workspace select"``): python-terraform puts
    options after all of it, where Terraform wants them.
    """
    built = _ArgvBuilder(terraform_bin_path=binary).generate_cmd_string(command, *args, **options)
    return [str(part) for part in built]


@contextlib.contextmanager
def _var_files(variables: Mapping[str, Any] | None, var_files: Sequence[str] | None) -> Iterator[list[str]]:
    """The -var-file list: the user's files, then the explicit variables last so they win.

    The variables go into python-terraform's temp tfvars.json (mode 0600, deleted afterwards),
    so values never appear in the process list. (As a var file, an undeclared variable is a
    warning rather than -var's error.)
    """
    temp = VariableFiles()
    try:
        files = list(var_files or [])
        if variables:
            files.append(str(temp.create(dict(variables))))
        yield files
    finally:
        temp.clean_up()


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


@dataclass
class PlanSummary:
    add: int
    change: int
    destroy: int
    resources: list[dict[str, Any]]  # [{"address": "terraform_data.a", "actions": ["create"]}]
    has_changes: bool  # Terraform's own verdict (-detailed-exitcode 2): resource *or* output changes
    planfile: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class Applied:
    completed: int  # completion events; a replacement counts 2, so the total is plan add + change + destroy
    output: str  # the tail of Terraform's output, secrets masked


@dataclass(frozen=True)
class TerraformCli:
    """One root module (``workdir``) driven by one binary with one environment.

    ``env`` goes on top of the worker's environment (:func:`terraform_env`);
    ``secrets`` are masked in output and errors. Every method raises
    :class:`~.diagnostics.TerraformError` (file:line diagnostics where Terraform gives them).
    """

    binary: str
    workdir: str
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Sequence[str] = ()
    lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT
    grace: timedelta = CANCEL_GRACE

    async def init(self, backend_config: Mapping[str, str] | None = None) -> str:
        """``init -backend-config=k=v... -reconfigure -backend=true -no-color -input=false``; its output.

        ``-reconfigure`` (python-terraform's default): a fresh backend setup, never an interactive
        migration. backend_config values are visible in the process list; pass backend secrets
        through ``env`` instead. A syntax error fails here, with file:line.
        """
        argv = terraform_argv(
            self.binary,
            "init",
            backend_config=dict(backend_config or {}) or None,
            reconfigure=IsFlagged,
            backend=True,
            no_color=IsFlagged,
            input=False,
        )
        return (await self._run("init", argv)).output

    async def select_workspace(self, name: str) -> bool:
        """``workspace select -or-create=true NAME``; True if it was created.

        Falls back to ``workspace select`` / ``workspace new`` for binaries without ``-or-create``
        (Terraform < 1.4, OpenTofu < 1.6). Fails if TF_WORKSPACE is set: Terraform refuses to switch then.
        """
        argv = terraform_argv(self.binary, "workspace select", name, or_create=True)
        result = await self._run("workspace select", argv, ok=None)
        if result.exit_code != 0 and "-or-create" in result.output and "not defined" in result.output:
            selected = await self._run(
                "workspace select", terraform_argv(self.binary, "workspace select", name), ok=None
            )
            if selected.exit_code == 0:
                return False
            await self._run("workspace new", terraform_argv(self.binary, "workspace new", name))
            return True
        if result.exit_code != 0:
            raise error_for("workspace select", argv, result.exit_code, result.output)
        return "Created and switched" in result.output

    async def plan(
        self,
        out: str | Path,
        variables: Mapping[str, Any] | None = None,
        var_files: Sequence[str] | None = None,
        *,
        destroy: bool = False,
    ) -> PlanSummary:
        """``plan -out=OUT`` (see :meth:`_plan`), then ``show -json`` for the summary.

        ``out`` and relative ``var_files`` are relative to ``workdir``; ``variables`` override ``var_files``.
        Counts follow Terraform's "Plan: X to add, Y to change, Z to destroy" (a replacement is 1 add +
        1 destroy); ``resources`` skips no-op and read.
        """
        planfile = _absolute(out, self.workdir)
        code, warnings = await self._plan("plan", variables, var_files, out=planfile, destroy=destroy or None)
        shown = await self._run(
            "show -json",
            terraform_argv(self.binary, "show", planfile, json=IsFlagged, no_color=IsFlagged),
            capture_stdout=True,
        )
        add = change = remove = 0
        resources: list[dict[str, Any]] = []
        for planned in json.loads(shown.stdout).get("resource_changes") or []:
            actions = list((planned.get("change") or {}).get("actions") or [])
            if not actions or actions in (["no-op"], ["read"]):
                continue
            add += "create" in actions
            change += actions == ["update"]
            remove += "delete" in actions
            resources.append({"address": planned["address"], "actions": actions})
        return PlanSummary(add, change, remove, resources, has_changes=code == 2, planfile=planfile, warnings=warnings)

    async def drift(
        self,
        variables: Mapping[str, Any] | None = None,
        var_files: Sequence[str] | None = None,
        *,
        refresh_only: bool = False,
    ) -> bool:
        """True if an apply would change anything: a plan (no plan file) exits 2.

        Plain plan (refresh + diff against the configuration) on purpose: it catches edited remote
        objects, state changed by another apply or ``state rm``, and unapplied configuration.
        ``refresh_only=True`` reports only remote objects that changed behind Terraform's back and is
        blind to everything else (docs/terraform.md).
        """
        code, _ = await self._plan("plan (drift)", variables, var_files, refresh_only=refresh_only or None)
        return code == 2

    async def _plan(
        self, what: str, variables: Mapping[str, Any] | None, var_files: Sequence[str] | None, **options: object
    ) -> tuple[int, list[str]]:
        """``plan -var-file=... -no-color -input=false -detailed-exitcode -json -lock-timeout=T ...``:
        its exit code (0 no changes, 2 changes) and its warnings."""
        flags = {k: IsFlagged if v is True else v for k, v in options.items()}
        with _var_files(variables, var_files) as files:
            argv = terraform_argv(
                self.binary,
                "plan",
                var_file=files or None,
                no_color=IsFlagged,
                input=False,
                detailed_exitcode=IsFlagged,
                json=IsFlagged,
                lock_timeout=_seconds(self.lock_timeout),
                **flags,
            )
            events: list[str] = []
            result = await self._run(what, argv, ok=(0, 2), events=events)
        warnings = [str(d) for d in parse_json_diagnostics("\n".join(events)) if d.severity == "warning"]
        return result.exit_code, warnings

    async def apply(self, planfile: str | Path) -> Applied:
        """``apply -no-color -input=false -auto-approve=true -lock-timeout=T PLANFILE``: exactly the saved plan.

        Heartbeats carry the number of resources completed so far (``resources``). A plan made
        before the state changed raises :class:`~.diagnostics.StalePlanError`.
        """
        argv = terraform_argv(
            self.binary,
            "apply",
            _absolute(planfile, self.workdir),
            no_color=IsFlagged,
            input=False,
            auto_approve=True,
            lock_timeout=_seconds(self.lock_timeout),
        )
        completed = 0

        def count(line: str) -> None:
            nonlocal completed
            completed += parse_progress_line(line)

        result = await self._run("apply", argv, on_line=count, progress=lambda: {"resources": completed})
        return Applied(completed=completed, output=result.output)

    async def outputs(self) -> dict[str, dict[str, Any]]:
        """``output -json`` as ``{name: {"value": ..., "sensitive": bool}}`` (sensitive values in clear)."""
        result = await self._run("output", terraform_argv(self.binary, "output", json=IsFlagged), capture_stdout=True)
        data: dict[str, dict[str, Any]] = json.loads(result.stdout or "{}")
        return {name: {"value": o.get("value"), "sensitive": bool(o.get("sensitive"))} for name, o in data.items()}

    async def _run(
        self,
        what: str,
        argv: list[str],
        *,
        ok: tuple[int, ...] | None = (0,),
        events: list[str] | None = None,
        on_line: Callable[[str], None] | None = None,
        progress: Callable[[], dict[str, Any]] | None = None,
        capture_stdout: bool = False,
    ) -> ProcessResult:
        """Run one command; raise its error unless its exit code is in ``ok`` (``None``: any).
        ``events`` collects the ``-json`` diagnostic lines, which the bounded output tail may not hold."""
        found = events if events is not None else []

        def line(text: str) -> None:
            if text.startswith("{") and '"diagnostic"' in text:
                found.append(text)
            if on_line is not None:
                on_line(text)

        result = await run_process(
            argv,
            cwd=self.workdir,
            env=terraform_env(self.env),
            secrets=self.secrets,
            cancel_signal=signal.SIGINT,
            grace=self.grace,
            on_line=line,
            progress=progress,
            capture_stdout=capture_stdout,
        )
        if ok is not None and result.exit_code not in ok:
            raise error_for(what, argv, result.exit_code, result.output, "\n".join(found))
        return result


def _absolute(path: str | Path, workdir: str | Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else Path(workdir) / p)
