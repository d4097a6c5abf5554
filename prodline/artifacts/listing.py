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

import fnmatch
import os
import posixpath
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from prodline.errors import InvalidInput

from .ignore import IGNORE_FILE, IgnoreFiles

NEVER_DIRS = frozenset({".git", ".terraform", "terraform.tfstate.d"})
NEVER_FILES = (".git", "*.tfstate", "*.tfstate.*", "*.tfplan")
STATE_FILES = ("*.tfstate", "*.tfstate.*")
# The folder decides which repository lists it, not variables a git hook may have set.
_GIT_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_PREFIX")


class BundleError(InvalidInput):
    """A folder cannot be packed as it is; the message names the path and the fix."""


@dataclass(frozen=True)
class Entry:
    rel: str  # "/"-separated, relative to the root
    path: Path
    size: int = 0
    executable: bool = False
    link: str | None = None  # a symbolic link's target, relative


@dataclass
class Listing:
    root: Path
    entries: list[Entry]  # sorted by rel
    warnings: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)


def list_bundle(root: Path) -> Listing:
    """The entries of ``root``'s bundle, sorted; :class:`BundleError` if one cannot be packed."""
    root = root.resolve()
    if not root.is_dir():
        raise BundleError(f"{root}: the bundle root is not a folder; check `bundle.root` in the service file")
    warnings: list[str] = []
    candidates = _collect(root, root, "", warnings)
    ignore = IgnoreFiles(root)
    entries, state = [], []
    for rel in sorted(set(candidates)):
        if _never(rel):
            if any(fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], p) for p in STATE_FILES):
                state.append(rel)
            continue
        if ignore.excluded(rel):
            continue
        entry = _entry(root, rel)
        if entry is not None:
            entries.append(entry)
    if state:
        warnings.append(
            f"left out Terraform state {', '.join(state[:3])}{' ...' if len(state) > 3 else ''}: state never travels "
            "in a bundle (a step's state lives in its backend, or the worker's data folder for the local one)"
        )
    warnings += _dangling_links(entries)
    return Listing(root, entries, warnings)


def _never(rel: str) -> bool:
    *folders, name = rel.split("/")
    return any(f in NEVER_DIRS for f in folders) or any(fnmatch.fnmatchcase(name, p) for p in NEVER_FILES)


# --- candidates: git's list, or a walk ---------------------------------------------------


def _collect(root: Path, folder: Path, prefix: str, warnings: list[str]) -> list[str]:
    listed = _git_list(folder)
    if listed is None:
        return _walk(root, folder, prefix, warnings)
    out = []
    for rel in listed:
        path = folder / rel
        if rel.endswith("/") or (path.is_dir() and not path.is_symlink()):
            # A nested repository (untracked: "sub/") or a submodule (a gitlink): its own git lists it.
            sub = rel.rstrip("/")
            if _never(sub):
                continue
            if (path / ".git").exists():
                out += _collect(root, folder / sub, f"{prefix}{sub}/", warnings)
            else:
                warnings.append(f"{prefix}{sub}: a submodule that is not checked out; its files are not in the bundle")
            continue
        out.append(prefix + rel)
    return out


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


def _walk(root: Path, folder: Path, prefix: str, warnings: list[str]) -> list[str]:
    out: list[str] = []
    ignore = IgnoreFiles(root)
    pending = [(folder, prefix)]
    while pending:
        here, at = pending.pop()
        with os.scandir(here) as it:
            for item in it:
                rel = at + item.name
                if item.is_dir(follow_symlinks=False):
                    if item.name in NEVER_DIRS or ignore.excluded(rel, is_dir=True):
                        continue  # pruned: a big ignored folder is never walked
                    if os.path.lexists(os.path.join(item.path, ".git")):
                        out += _collect(root, Path(item.path), rel + "/", warnings)
                    else:
                        pending.append((Path(item.path), rel + "/"))
                else:
                    out.append(rel)
    return out


# --- what one path is --------------------------------------------------------------------


def _entry(root: Path, rel: str) -> Entry | None:
    path = root / rel
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None  # tracked by git but deleted in the work tree: not part of what ships
    _check_name(root, rel)
    if stat.S_ISREG(info.st_mode):
        return Entry(rel, path, size=info.st_size, executable=bool(info.st_mode & stat.S_IXUSR))
    if stat.S_ISLNK(info.st_mode):
        return Entry(rel, path, link=_link_target(root, rel, path))
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
