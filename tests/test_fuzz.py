"""The config loader never crashes: any input gives located problems, never a traceback."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prodline.config import validate_files

VALID_APP = {
    "application": "shop",
    "environments": [
        {"name": "staging"},
        {"name": "production", "preconditions": [{"approval": {"approvers": ["alice"]}}]},
    ],
}
VALID_SERVICE = {
    "service": "checkout",
    "application": "shop",
    "parameters": {
        "replicas": {"type": "int", "default": 1},
        "db_password": {"type": "secret", "from_env": "DB_PASSWORD"},
    },
    "steps": [{"name": "deploy", "command": {"apply": "./deploy.sh {{ version }}"}, "timeout": "10m"}],
    "environments": {"production": {"parameters": {"replicas": 3}}},
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True),
    st.text(max_size=50), st.text(alphabet=string.ascii_lowercase + "-_{} .", max_size=10_000),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=30,
)


def check(app_text: str, service_text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        app, service = Path(folder) / "prodline.yaml", Path(folder) / "svc.yaml"
        app.write_text(app_text)
        service.write_text(service_text)
        problems = validate_files([app, service])  # must not raise
        for problem in problems:
            assert problem.file in (str(app), str(service))
            assert problem.line >= 1 and problem.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_random_text(text):
    check(text, text)


def _mutate(document: dict, path: list, value) -> dict:
    """Replace (or add) the value at a random path inside a copy of a valid document."""
    copy = yaml.safe_load(yaml.safe_dump(document))
    node = copy
    for key in path[:-1]:
        if isinstance(node, dict) and node:
            node = node[sorted(node)[key % len(node)]]
        elif isinstance(node, list) and node:
            node = node[key % len(node)]
    if isinstance(node, dict) and node:
        node[sorted(node)[path[-1] % len(node)] if path[-1] % 3 else f"extra{path[-1]}"] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    return copy


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=5), values, st.booleans())
def test_valid_configs_with_one_random_field(path, value, which):
    app, service = (
        (_mutate(VALID_APP, path, value), VALID_SERVICE) if which else (VALID_APP, _mutate(VALID_SERVICE, path, value))
    )
    check(yaml.safe_dump(app), yaml.safe_dump(service))


def test_huge_and_deep_inputs():
    check("application: " + "a" * 1_000_000, "service: x\n" + "steps:\n" + "  - " * 1 + "[" * 5000 + "]" * 5000)
    check("a: &a [*a]\n", "service: x\nsteps: " + "[" * 100_000)
