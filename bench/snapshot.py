"""Benchmark one fixed copy of prodline, not a working tree that changes under the run.

The Temporal workflow sandbox re-reads workflow modules from disk for every new
workflow run, so an edit made while a worker runs (a shared checkout, a rebase)
lands in the middle of a benchmark: releases then fail their workflow tasks on
a half-applied change and never close. Before anything imports prodline, the
package (``prodline/`` and the folders its symlinks point at) is copied to a temp dir that goes first on
``sys.path`` and, through PYTHONPATH, on every child's (workers, CLIs). The copy
must import cleanly; a tree caught mid-edit is copied again a little later.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _package_dirs() -> dict[str, Path]:
    """``prodline`` -> REPO/prodline, ``prodline.config`` -> REPO/config, ...: the package
    root and the card's folders its symlinks point at (copied as real folders)."""
    root = REPO / "prodline"
    dirs = {"prodline": root}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and (entry / "__init__.py").exists():
            dirs[f"prodline.{entry.name}"] = entry.resolve()
    return dirs


def digest(root: Path | None = None) -> str:
    """A fingerprint of prodline's Python sources (what was measured, committed or not):
    in the copy under ``root``, or in the working tree."""
    h = hashlib.sha256()
    for name, source in sorted(_package_dirs().items()):
        folder = root.joinpath(*name.split(".")) if root is not None else source
        paths = folder.glob("*.py") if name == "prodline" else folder.rglob("*.py")
        for path in sorted(paths):
            if "__pycache__" in path.parts:
                continue
            h.update(f"{name}/{path.relative_to(folder)}".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _copy(target: Path) -> None:
    for name, source in _package_dirs().items():
        destination = target.joinpath(*name.split("."))
        shutil.rmtree(destination, ignore_errors=True)
        if name == "prodline":  # the root's own files; its symlinked folders are copied one by one
            destination.mkdir(parents=True, exist_ok=True)
            for path in source.iterdir():
                if path.is_file() and not path.is_symlink():
                    shutil.copy2(path, destination / path.name)
            continue
        shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _imports_cleanly(target: Path) -> str:
    """'' if the copy's worker, workflows and CLI import; else the error."""
    check = "import prodline.workers.worker, prodline.cli.release, prodline.cli.dev"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
    return (
        "" if result.returncode == 0 else (result.stderr.strip().splitlines() or ["exit " + str(result.returncode)])[-1]
    )


def activate(attempts: int = 6, pause: float = 10.0) -> tuple[Path, str]:
    """Copy, check, and put the copy first for this process and its children; return it and its digest."""
    if "prodline" in sys.modules:
        raise RuntimeError("snapshot.activate() must run before anything imports prodline")
    target = Path(tempfile.mkdtemp(prefix="prodline-bench-code-"))
    error = ""
    for attempt in range(attempts):
        _copy(target)
        error = _imports_cleanly(target)
        if not error:
            break
        print(
            f"bench: the working tree does not import right now ({error}); copying again in {pause:.0f}s",
            file=sys.stderr,
            flush=True,
        )
        if attempt < attempts - 1:
            time.sleep(pause)
    else:
        shutil.rmtree(target, ignore_errors=True)
        raise RuntimeError(f"prodline does not import from the working tree: {error}")
    sys.path.insert(1, str(target))  # after bench/ itself, before site-packages' editable finder
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    return target, digest(target)
