"""Which files of a folder go into its bundle, and what each one is.

* Inside a git work tree: what ``git ls-files --cached --others --exclude-standard``
  lists (tracked files, and untracked ones ``.gitignore`` does not exclude), run in
  the folder itself so that a root that is a subfolder of the work tree, or ``..``
  of a service folder, lists exactly its own files. Nested repositories and
  submodules are listed by their own git.
* Outside one: every file, walking the folder (a nested git repository in it is
  listed by its git).
* Then, in both cases, minus what ``.prodlineignore`` files exclude, and never
  ``.git``, ``.terraform/`` (the lock file ``.terraform.lock.hcl`` sits beside it and
  stays), Terraform state (``*.tfstate``, ``*.tfstate.*``, ``terraform.tfstate.d/``)
  or saved plans (``*.tfplan``): state belongs to a backend, and a plan to the
  artifact store.

Regular files keep only their executable bit; hard links become plain files;
symbolic links are kept when they stay inside the root and refused otherwise;
FIFOs, sockets and devices are refused.
"""

from __future__ import annotations

import os
import posixpath
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prodline.errors import InvalidInput

from .ignore import IGNORE_FILE, IgnoreFiles

NEVER_DIRS = frozenset({".git", ".terraform", "terraform.tfstate.d"})
# The folder decides which repository lists it, not variables a git hook may have set.
_GIT_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_PREFIX")


class BundleError(InvalidInput):
    """A folder cannot be packed as it is; the message names the path and the fix."""


@dataclass(frozen=True)
class Entry:
    rel: str  # "/"-separated, relative to the root
    file: str  # its absolute path (a string: a bundle may list thousands, pathlib costs)
    size: int = 0
    executable: bool = False
    link: str | None = None  # a symbolic link's target, relative

    @property
    def path(self) -> Path:
        return Path(self.file)


@dataclass
class Listing:
    root: Path
    entries: list[Entry]  # sorted by rel
    warnings: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)


def list_bundle(root: Path, exclude: Iterable[str] = ()) -> Listing:
    """The entries of ``root``'s bundle, sorted; :class:`BundleError` if one cannot be packed.

    ``exclude``: paths relative to the root (``/``-separated) the caller leaves out, a
    folder with everything in it (the application file, whose text travels on its own).
    """
    root = root.resolve()
    left_out = tuple(p.strip("/") for p in exclude)
    if not root.is_dir():
        raise BundleError(f"{root}: the bundle root is not a folder; check `bundle.root` in the service file")
    warnings: list[str] = []
    ignore = IgnoreFiles(root)
    candidates: dict[str, os.stat_result] = {}
    _collect(str(root), "", ignore, candidates, warnings)
    entries, state = [], []
    for rel in sorted(candidates):
        if _never(rel):
            if _is_state(rel.rsplit("/", 1)[-1]):
                state.append(rel)
            continue
        if any(rel == p or rel.startswith(p + "/") for p in left_out):
            continue
        if not ignore.excluded(rel):
            entries.append(_entry(root, rel, candidates[rel]))
    if not entries and not left_out:  # a folder of scripts may be empty but for the file left out
        raise BundleError(
            f"{root}: nothing to bundle: there is no file, or git's ignore files or {IGNORE_FILE} exclude them "
            "all; check that `bundle.root` names the service's folder and that no .gitignore ignores it"
        )
    if state:
        warnings.append(
            f"left out Terraform state {', '.join(state[:3])}{' ...' if len(state) > 3 else ''}: state never travels "
            "in a bundle (a step's state lives in its backend, or the worker's data folder for the local one)"
        )
    warnings += _dangling_links(entries)
    return Listing(root, entries, warnings)


def _is_state(name: str) -> bool:
    return name.endswith(".tfstate") or ".tfstate." in name  # *.tfstate, *.tfstate.*


def _never(rel: str) -> bool:
    *folders, name = rel.split("/")
    return any(f in NEVER_DIRS for f in folders) or name == ".git" or _is_state(name) or name.endswith(".tfplan")


# --- candidates: git's list, or a walk ---------------------------------------------------


def _collect(
    folder: str, prefix: str, ignore: IgnoreFiles, out: dict[str, os.stat_result], warnings: list[str]
) -> None:
    """Add the candidates below ``folder`` (``prefix`` relative to the root) to ``out``, with their lstat."""
    listed = _git_list(Path(folder))
    if listed is None:
        _walk(folder, prefix, ignore, out, warnings)
        return
    for rel in listed:
        path = os.path.join(folder, rel)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue  # tracked but deleted in the work tree: not part of what ships
        if stat.S_ISDIR(info.st_mode):
            # A nested repository (untracked: "sub/") or a submodule (a gitlink): its own git lists it.
            _nested(path, prefix + rel.rstrip("/"), ignore, out, warnings)
        else:
            out[prefix + rel] = info


def _nested(path: str, rel: str, ignore: IgnoreFiles, out: dict[str, os.stat_result], warnings: list[str]) -> None:
    if _never(rel) or ignore.excluded(rel, is_dir=True):
        return
    if os.path.lexists(os.path.join(path, ".git")):
        _collect(path, rel + "/", ignore, out, warnings)
    elif os.listdir(path):
        _walk(path, rel + "/", ignore, out, warnings)
    else:
        warnings.append(f"{rel}: a submodule that is not checked out; its files are not in the bundle")


def _git_list(folder: Path) -> list[str] | None:
    """What git lists in ``folder`` (relative to it), or None when it is not in a work tree."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_VARIABLES} | {"LC_ALL": "C"}
    command = ["git", "-C", str(folder), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    try:
        done = subprocess.run(command, capture_output=True, env=env, check=False)
    except FileNotFoundError:
        above = next((p for p in (folder, *folder.parents) if (p / ".git").exists()), None)
        if above is not None:
            raise BundleError(
                f"{folder} is inside the git work tree {above}, but git is not installed: install git so that "
                "the bundle holds exactly the files git would (tracked, and untracked ones not ignored)"
            ) from None
        return None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        if "not a git repository" in message:
            return None
        raise BundleError(f"{folder}: `git ls-files` failed, so the bundle's files are unknown: {message}")
    return [p for p in os.fsdecode(done.stdout).split("\0") if p]


def _walk(folder: str, prefix: str, ignore: IgnoreFiles, out: dict[str, os.stat_result], warnings: list[str]) -> None:
    pending = [(folder, prefix)]
    while pending:
        here, at = pending.pop()
        with os.scandir(here) as it:
            for item in it:
                rel = at + item.name
                if not item.is_dir(follow_symlinks=False):
                    out[rel] = item.stat(follow_symlinks=False)
                elif os.path.lexists(os.path.join(item.path, ".git")):
                    _nested(item.path, rel, ignore, out, warnings)
                elif item.name not in NEVER_DIRS and not ignore.excluded(rel, is_dir=True):
                    pending.append((item.path, rel + "/"))  # an ignored folder is never walked


# --- what one path is --------------------------------------------------------------------


def _entry(root: Path, rel: str, info: os.stat_result) -> Entry:
    path = os.path.join(root, rel)
    _check_name(root, rel)
    if stat.S_ISREG(info.st_mode):
        return Entry(rel, path, size=info.st_size, executable=bool(info.st_mode & stat.S_IXUSR))
    if stat.S_ISLNK(info.st_mode):
        return Entry(rel, path, link=_link_target(root, rel, Path(path)))
    kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "a device"
    raise BundleError(
        f"{path} is {kind}: a bundle holds only files, folders and symbolic links; move it out of {root} "
        f"or exclude it in {root / IGNORE_FILE}"
    )


def _check_name(root: Path, rel: str) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(
            f"{root / rel!r}: the name is not valid UTF-8, so it would not read back the same on every worker; "
            f"rename it or exclude it in {root / IGNORE_FILE}"
        ) from None


def _link_target(root: Path, rel: str, path: Path) -> str:
    target = os.readlink(path)
    fix = (
        f"make it a relative link inside {root}, replace it with the file itself, or exclude it in {root / IGNORE_FILE}"
    )
    if os.path.isabs(target):
        raise BundleError(f"{path} is a symbolic link to the absolute path {target}: {fix}")
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        raise BundleError(f"{path} is a symbolic link to {target}, which leaves {root} (to {real}): {fix}")
    parent = posixpath.dirname(rel)
    lexical = posixpath.normpath(posixpath.join(parent, target))
    if lexical == ".." or lexical.startswith("../"):
        # Leaves the root on paper and comes back in (../svc/x): the bundle's root has
        # another name on the worker, so point at the same file from inside.
        return os.path.relpath(real, root / parent)
    return target


def _dangling_links(entries: list[Entry]) -> list[str]:
    present = {e.rel for e in entries}
    folders = {posixpath.dirname(e.rel) for e in entries}
    for folder in list(folders):
        while folder:
            folder = posixpath.dirname(folder)
            folders.add(folder)
    out = []
    for e in entries:
        if e.link is None:
            continue
        to = posixpath.normpath(posixpath.join(posixpath.dirname(e.rel), e.link))
        if to not in present and to not in folders and to != ".":
            out.append(f"{e.path} links to {e.link}, which is not in the bundle (ignored or missing)")
    return out
