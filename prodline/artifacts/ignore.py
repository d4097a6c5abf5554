"""``.prodlineignore`` files: gitignore syntax, matched the way git matches ``.gitignore``.

Every folder of a bundle's root may hold one; its patterns apply to the paths
below that folder, deeper files override shallower ones and, within a file, the
last matching pattern wins (``!`` re-includes). As in git, nothing inside an
excluded folder can be re-included. Supported: ``#`` comments, ``\\`` escapes,
``!``, a trailing ``/`` (folders only), a leading or inner ``/`` (anchored to the
file's folder), ``*``, ``?``, ``[...]`` and ``**`` (``**/x``, ``x/**``,
``a/**/b``). Not supported: POSIX classes such as ``[[:alpha:]]``.

The same rules filter git's file list inside a work tree and the walked folder
outside one, so one ``.prodlineignore`` means the same thing in both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

IGNORE_FILE = ".prodlineignore"


@dataclass(frozen=True)
class Rule:
    base: str  # the folder of the file that holds it, relative to the root ("" for the root)
    regex: re.Pattern[str]
    negated: bool
    folders_only: bool
    anchored: bool

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.folders_only and not is_dir:
            return False
        if self.base:
            if not rel.startswith(self.base + "/"):
                return False
            rel = rel[len(self.base) + 1 :]
        # Unanchored patterns match a name at any depth; the caller checks every parent
        # folder of a path on its own, so matching the last name here is enough.
        return bool(self.regex.fullmatch(rel if self.anchored else rel.rsplit("/", 1)[-1]))


def parse(text: str, base: str = "") -> list[Rule]:
    """The rules of one ignore file whose folder is ``base`` (relative to the root)."""
    rules = []
    for raw in text.splitlines():
        line = _strip_trailing_spaces(raw)
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        folders_only = line.endswith("/") and not line.endswith("\\/")
        line = line.rstrip("/") if folders_only else line
        if not line:
            continue
        anchored = "/" in line
        regex = re.compile(_translate(line.lstrip("/")), re.DOTALL)
        rules.append(Rule(base, regex, negated, folders_only, anchored))
    return rules


def _strip_trailing_spaces(line: str) -> str:
    """Trailing spaces are dropped unless the last one is escaped with a backslash."""
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        return stripped[:-1] + " "
    return stripped


def _translate(pattern: str) -> str:
    """A gitignore pattern (without ``!``, leading or trailing ``/``) as a regular expression."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            whole_segment = (i == 0 or pattern[i - 1] == "/") and (j == n or pattern[j] == "/")
            if j - i == 2 and whole_segment:
                if j == n:  # "x/**": everything inside x
                    out.append(".*")
                else:  # "**/": zero or more folders
                    out.append("(?:.*/)?")
                    j += 1
            else:  # other runs of asterisks are plain "*"
                out.append("[^/]*")
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end, chars = _bracket(pattern, i)
            out.append(chars if end else re.escape(c))
            i = end or i + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _bracket(pattern: str, start: int) -> tuple[int, str]:
    """``[...]`` at ``start`` as a regex class and the index after it; (0, "") if it never closes."""
    i = start + 1
    negated = i < len(pattern) and pattern[i] in "!^"
    if negated:
        i += 1
    body, first = [], True
    while i < len(pattern):
        c = pattern[i]
        if c == "]" and not first:
            inner = "".join(body)
            return i + 1, f"[^/{inner}]" if negated else f"(?!/)[{inner}]"
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
        elif c == "-" and body and i + 1 < len(pattern) and pattern[i + 1] != "]":
            body.append("-")
            i += 1
            first = False
            continue
        body.append(re.escape(c))
        first = False
        i += 1
    return 0, ""


class IgnoreFiles:
    """The ``.prodlineignore`` files under ``root``, read once each, and their verdicts."""

    def __init__(self, root: Path, name: str = IGNORE_FILE):
        self.root = root
        self.name = name
        self._rules: dict[str, list[Rule]] = {}  # folder -> the rules that apply to its entries
        self._excluded_dirs: dict[str, bool] = {"": False}

    def excluded(self, rel: str, is_dir: bool = False) -> bool:
        """Whether the ``/``-separated path ``rel`` (relative to the root) is left out."""
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        if self._dir_excluded(parent):
            return True
        return self._matches(parent, rel, is_dir)

    def _dir_excluded(self, folder: str) -> bool:
        known = self._excluded_dirs.get(folder)
        if known is None:
            parent = folder.rsplit("/", 1)[0] if "/" in folder else ""
            known = self._dir_excluded(parent) or self._matches(parent, folder, True)
            self._excluded_dirs[folder] = known
        return known

    def _matches(self, folder: str, rel: str, is_dir: bool) -> bool:
        verdict = False
        for rule in self._rules_of(folder):
            if rule.matches(rel, is_dir):
                verdict = not rule.negated
        return verdict

    def _rules_of(self, folder: str) -> list[Rule]:
        """The rules of ``folder``'s own file after those of every folder above it."""
        rules = self._rules.get(folder)
        if rules is None:
            above = self._rules_of(folder.rsplit("/", 1)[0] if "/" in folder else "") if folder else []
            try:
                with open(os.path.join(self.root, folder, self.name), encoding="utf-8", errors="replace") as f:
                    own = parse(f.read(), folder)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                own = []
            rules = above + own
            self._rules[folder] = rules
        return rules
