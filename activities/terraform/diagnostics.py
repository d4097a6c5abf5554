"""What Terraform's output says: its diagnostics, whether retrying can help, and apply progress.

``plan`` runs with ``-json``, whose ``diagnostic`` events carry file and line
(lock and variable errors included); every other command prints human text,
parsed from its ``Error: ...`` / ``on FILE line N`` blocks (the same on every
Terraform and OpenTofu version). A syntax error is already reported by ``init``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

ErrorKind = Literal["config", "transient"]


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
    """A Terraform command failed. ``kind`` says whether retrying can help; ``output`` is its tail."""

    def __init__(
        self, message: str, *, command: list[str], returncode: int, output: str = "", diagnostics: list[Diagnostic]
    ):
        super().__init__(message)
        self.command, self.returncode, self.output, self.diagnostics = command, returncode, output, diagnostics

    @property
    def kind(self) -> ErrorKind:
        return classify_error(self.diagnostics or self.output)


class StalePlanError(TerraformError):
    """The state changed after the plan was made ("Saved plan is stale"): plan again, never retry as is."""

    @property
    def kind(self) -> ErrorKind:
        return "config"


def error_for(what: str, argv: list[str], returncode: int, output: str, events: str = "") -> TerraformError:
    """The error of a failed command, from its ``-json`` ``events`` if any, else from its human ``output``."""
    diagnostics = _errors(parse_json_diagnostics(events)) or _errors(parse_human_diagnostics(output))
    stale = any(d.summary == "Saved plan is stale" for d in diagnostics)
    cls = StalePlanError if stale else TerraformError
    message = _message(what, diagnostics, output, returncode)
    return cls(message, command=argv, returncode=returncode, output=output, diagnostics=diagnostics)


def _message(what: str, diagnostics: list[Diagnostic], output: str, returncode: int) -> str:
    if diagnostics:
        located = sorted(diagnostics, key=lambda d: d.filename is None)  # file:line first, preambles after
        return f"terraform {what} failed: " + "; ".join(str(d) for d in located)
    tail = "\n".join(output.strip().splitlines()[-10:])
    return f"terraform {what} failed (exit {returncode}): {tail}"


def _errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity == "error"]


def _from_json(d: Mapping[str, Any]) -> Diagnostic:
    start = (d.get("range") or {}).get("start") or {}
    return Diagnostic(
        severity=d.get("severity", "error"),
        summary=d.get("summary", ""),
        detail=d.get("detail", "") or "",
        filename=(d.get("range") or {}).get("filename"),
        line=start.get("line"),
        column=start.get("column"),
    )


def parse_json_diagnostics(text: str) -> list[Diagnostic]:
    """``diagnostic`` events of a ``-json`` run (plan/apply/init), or the list of ``validate -json``."""
    with contextlib.suppress(ValueError):
        doc = json.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("diagnostics"), list):
            return [_from_json(d) for d in doc["diagnostics"]]
    found: list[Diagnostic] = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("type") == "diagnostic" and isinstance(event.get("diagnostic"), dict):
            found.append(_from_json(event["diagnostic"]))
    return found


_ON_LINE = re.compile(r"^\s*on (?P<file>\S.*?) line (?P<line>\d+)")
_SNIPPET = re.compile(r"^\s*\d+:")
_HEADER = re.compile(r"^(?P<sev>Error|Warning): (?P<summary>.*)$")


@dataclass
class _Block:
    severity: str
    summary: str
    detail: list[str]
    filename: str | None = None
    line: int | None = None


def parse_human_diagnostics(text: str) -> list[Diagnostic]:
    """``Error: summary`` / ``on main.tf line 6, in ...`` / detail blocks of human output (any version)."""
    blocks: list[_Block] = []
    for raw in text.splitlines():
        line = re.sub(r"^[│╷╵]\s?", "", raw.rstrip())
        header = _HEADER.match(line)
        if header:
            blocks.append(_Block(header["sev"].lower(), header["summary"].strip(), []))
            continue
        if not blocks:
            continue
        current = blocks[-1]
        on = _ON_LINE.match(line)
        if on and current.filename is None:
            current.filename, current.line = on["file"], int(on["line"])
        elif line.strip() and not _SNIPPET.match(line) and not line.lstrip().startswith("with "):
            current.detail.append(line.strip())
    return [Diagnostic(b.severity, b.summary, " ".join(b.detail), b.filename, b.line) for b in blocks]


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


def classify_error(output_or_diagnostics: str | Iterable[Diagnostic | Mapping[str, Any] | str]) -> ErrorKind:
    """``"transient"`` (retry: state lock held, registry/provider/network/API throttling) or ``"config"``.

    Configuration, variable and stale-plan errors are non-retryable and win when mixed with transient ones.
    Anything unrecognised is ``"config"``: a failed apply against production wants a human, not a retry loop.
    """
    if isinstance(output_or_diagnostics, str):
        text = output_or_diagnostics
    else:
        parts: list[str] = []
        for d in output_or_diagnostics:
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
