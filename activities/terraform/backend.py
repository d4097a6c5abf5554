"""Where a root module's state lives: the backend it declares, and moving local state out of its folder.

A release bundle's module folder is a throwaway copy, new for every attempt
(maybe on another worker), so state written next to the ``.tf`` files would be
lost. A module that declares no backend, or the local one with relative paths,
gets an override file (:data:`OVERRIDE_FILE`) that points the local backend at
a folder of the worker's data directory (:func:`local_state_override`).
Override files replace a ``backend`` block as a whole, and ``-backend-config``
at init still wins over them. A module with another backend (``s3``,
``remote``, a ``cloud`` block) keeps it: its state lives where it says.

:func:`declared_backend` reads the ``.tf`` and ``.tf.json`` files as Terraform
merges them: the one backend of the primary files, replaced by the last override
file (in name order) that declares one. It reads HCL only as far as that needs:
comments, strings, heredocs and nested blocks are skipped correctly; a file
Terraform cannot parse either is Terraform's to report, at init.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Sorts after override.tf and most *_override.tf names, so its backend is the one Terraform keeps.
OVERRIDE_FILE = "prodline_backend_override.tf.json"
# The local backend's two locations, with Terraform's defaults (relative to the working directory).
LOCAL_DEFAULTS = {"path": "terraform.tfstate", "workspace_dir": "terraform.tfstate.d"}


@dataclass(frozen=True)
class Backend:
    """A ``backend "NAME"`` block (``cloud`` for a ``cloud`` block) and its literal string settings."""

    name: str
    file: str = ""  # where it is declared; "" when no file declares one (Terraform's local default)
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.name == "local"

    def local_paths(self) -> dict[str, str]:
        """The local backend's ``path`` and ``workspace_dir`` as declared, Terraform's defaults where not."""
        return {key: self.settings.get(key) or default for key, default in LOCAL_DEFAULTS.items()}


def state_paths(state_dir: Path) -> dict[str, str]:
    """The local backend's settings for state kept in ``state_dir``: the default workspace's file and
    the folder of the others (``workspaces/NAME/terraform.tfstate``)."""
    return {"path": str(state_dir / "terraform.tfstate"), "workspace_dir": str(state_dir / "workspaces")}


def local_state_override(backend: Backend, state_dir: Path) -> str | None:
    """The override file's text that keeps the module's local state in ``state_dir``, or None when
    the module's state already lives elsewhere (another backend, or absolute local paths).

    Absolute paths the module declares are kept; relative ones (and the defaults) would point into
    the working copy and are replaced.
    """
    if not backend.is_local:
        return None
    ours = state_paths(state_dir)
    settings = {key: value if Path(value).is_absolute() else ours[key] for key, value in backend.local_paths().items()}
    if settings == backend.local_paths():
        return None
    settings = {key: _literal(value) for key, value in settings.items()}
    return json.dumps({"terraform": {"backend": {"local": settings}}}, indent=2) + "\n"


def _literal(value: str) -> str:
    """Terraform reads strings in .tf.json as templates: keep ``${`` and ``%{`` literal."""
    return value.replace("${", "$${").replace("%{", "%%{")


def declared_backend(module_dir: str | Path) -> Backend:
    """The backend Terraform would configure for the root module in ``module_dir``.

    Local (Terraform's default) when no file declares one. Only the module's own files count:
    a backend in a child module is ignored by Terraform too.
    """
    files = [p for p in sorted(Path(module_dir).iterdir()) if p.is_file() and _is_config(p.name)]
    found: Backend | None = None
    for path in (p for p in files if not _is_override(p.name)):
        found = found or _backend_in(path)
    for path in (p for p in files if _is_override(p.name)):
        found = _backend_in(path) or found
    return found or Backend("local")


def _is_config(name: str) -> bool:
    """A file Terraform loads (.tf or .tf.json; not hidden, not an editor's backup), not ours."""
    hidden = name.startswith(".") or name.endswith("~") or (name.startswith("#") and name.endswith("#"))
    return name.endswith((".tf", ".tf.json")) and not hidden and name != OVERRIDE_FILE


def _is_override(name: str) -> bool:
    stem = name.removesuffix(".json").removesuffix(".tf")
    return stem == "override" or stem.endswith("_override")


def _backend_in(path: Path) -> Backend | None:
    text = path.read_text(errors="replace")
    if not path.name.endswith(".json"):
        return _backend_in_hcl(text, path.name)
    try:
        return _backend_in_json(json.loads(text), path.name)
    except ValueError:  # Terraform reports it at init
        return None


def _backend_in_json(document: Any, file: str) -> Backend | None:
    for terraform in _blocks(document.get("terraform") if isinstance(document, dict) else None):
        if "cloud" in terraform:
            return Backend("cloud", file)
        for backends in _blocks(terraform.get("backend")):
            for name, bodies in backends.items():
                settings = {k: v for body in _blocks(bodies) for k, v in body.items() if isinstance(v, str)}
                return Backend(name, file, settings)
    return None


def _blocks(value: Any) -> list[dict[str, Any]]:
    """A JSON block is an object, or a list of objects when repeated."""
    if isinstance(value, dict):
        return [value]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# --- HCL, as far as a backend block needs ---------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_BLANK = re.compile(r"[ \t\r]+")
_OTHER = re.compile(r"[^\s#/\"<{}=A-Za-z_()\[\]]+")
_PLAIN = re.compile(r"[^\"\\$%\n]+")  # the part of a quoted string with nothing to interpret
_HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\n")


def _backend_in_hcl(text: str, file: str) -> Backend | None:
    """The ``backend``/``cloud`` block of a top-level ``terraform`` block, with its ``key = "literal"`` lines."""
    if "terraform" not in text or ("backend" not in text and "cloud" not in text):
        return None  # most files of a module: no need to read them closely
    stack: list[tuple[str, ...]] = []  # open blocks by their labels; ("=",) for an object expression
    line: list[tuple[str, str]] = []  # tokens since the last newline or brace
    found: Backend | None = None

    def setting() -> dict[str, str]:
        return {line[0][1]: line[2][1]} if [kind for kind, _ in line] == ["ident", "=", "string"] else {}

    for kind, value in _tokens(text):
        if kind == "{":
            header = tuple(v for _, v in line)
            is_block = bool(line) and line[0][0] == "ident" and all(k in ("ident", "string") for k, _ in line)
            if found is None and is_block and stack == [("terraform",)] and header[0] in ("backend", "cloud"):
                found = Backend("cloud" if header[0] == "cloud" else header[-1], file)
            stack.append(header if is_block else ("=",))
            line = []
        elif kind in ("}", "nl"):
            if found is not None and len(stack) == 2:  # a line of the backend block, or its end
                found = Backend(found.name, file, {**found.settings, **setting()})
                if kind == "}":
                    return found
            if kind == "}":
                stack = stack[:-1]
            line = []
        else:
            line.append((kind, value))
    return found


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """("ident" | "string" | "=" | "{" | "}" | "nl" | "other", value), comments and heredocs skipped.

    A quoted string's value is its text with escapes resolved, templates (``${...}``) kept as
    written; newlines inside brackets and parentheses are no statement ends and are not reported.
    """
    i, n, brackets = 0, len(text), 0
    while i < n:
        c = text[i]
        if c == "\n":
            if brackets == 0:
                yield "nl", ""
            i += 1
        elif (blank := _BLANK.match(text, i)) is not None:
            i = blank.end()
        elif c == "#" or text.startswith("//", i):
            i = _line_end(text, i)
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == '"':
            value, i = _string(text, i + 1)
            yield "string", value
        elif c == "<" and (heredoc := _HEREDOC.match(text, i)) is not None:
            yield "string", ""
            i = _heredoc_end(text, heredoc.end(), heredoc.group(1))
        elif c in "{}=":
            if c == "=" and text.startswith(("==", "=>"), i):
                yield "other", text[i : i + 2]
                i += 2
            else:
                yield c, c
                i += 1
        elif (ident := _IDENT.match(text, i)) is not None:
            yield "ident", ident.group()
            i = ident.end()
        elif c in "()[]":
            brackets = max(0, brackets + (c in "([") - (c in ")]"))
            yield "other", c
            i += 1
        else:  # numbers, operators, commas: one token for the run, which only a statement's shape needs
            other = _OTHER.match(text, i)
            i = other.end() if other is not None else i + 1
            yield "other", ""
    yield "nl", ""


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end  # the newline itself still ends the statement


def _string(text: str, i: int) -> tuple[str, int]:
    """A quoted string from just after its opening quote: (value, index after the closing quote).
    ``${...}``/``%{...}`` templates may hold braces and strings of their own."""
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if (plain := _PLAIN.match(text, i)) is not None:
            out.append(plain.group())
            i = plain.end()
        elif c == "\\" and i + 1 < n:
            out.append({"n": "\n", "t": "\t", "r": "\r"}.get(text[i + 1], text[i + 1]))
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        elif c in "$%" and text.startswith(c + c + "{", i):  # $${ and %%{ are a literal ${ and %{
            out.append(c + "{")
            i += 3
        elif c in "$%" and text.startswith(c + "{", i):
            end = _template_end(text, i + 2)
            out.append(text[i:end])
            i = end
        elif c == "\n":  # an unterminated string: Terraform reports it; stop at the line end
            return "".join(out), i
        else:
            out.append(c)
            i += 1
    return "".join(out), n


def _template_end(text: str, i: int) -> int:
    """Index just after the ``}`` closing a template interpolation that opened before ``i``."""
    depth, n = 1, len(text)
    while i < n and depth:
        c = text[i]
        if c == '"':
            _, i = _string(text, i + 1)
            continue
        depth += (c == "{") - (c == "}")
        i += 1
    return i


def _heredoc_end(text: str, i: int, marker: str) -> int:
    """Index of the newline after a heredoc's closing marker line (``<<-`` markers may be indented)."""
    for match in re.finditer(r"^[ \t]*" + re.escape(marker) + r"[ \t]*$", text[i:], re.MULTILINE):
        return i + match.end()
    return len(text)
