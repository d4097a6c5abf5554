"""The JSON Schema editors use agrees with what `prodline validate` accepts.

Two places where they used to differ: "exactly one kind" (steps, rules, protections) was
checked only when loading, and durations such as `1h 30m` loaded but failed the schema's
pattern. jsonschema is not a dependency, so the schema's `oneOf` branches are read here
the way a validator reads them (`required` plus the key's `type`) and compared with
loading the same documents.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import timedelta
from functools import cache
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from prodline.config.durations import parse_duration
from prodline.config.rules import Check, Precondition, Protection
from prodline.config.steps import Step

from conftest import REPO

_TYPES = {"object": dict, "string": str}


@cache
def schema(kind: str) -> dict[str, Any]:
    """What `prodline schema --kind KIND` prints, as an editor would get it."""
    result = subprocess.run(
        [sys.executable, "-m", "prodline.cli", "schema", "--kind", kind],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def branches_matched(definition: dict[str, Any], document: dict[str, Any]) -> int:
    """How many `oneOf` branches of ``definition`` hold for ``document`` (valid: exactly 1)."""
    matched = 0
    for branch in definition["oneOf"]:
        required = all(key in document for key in branch["required"])
        typed = all(isinstance(document.get(k), _TYPES[s["type"]]) for k, s in branch["properties"].items())
        matched += required and typed
    return matched


def loads(model: type[BaseModel], document: dict[str, Any]) -> bool:
    try:
        model.model_validate(document)
    except ValidationError:
        return False
    return True


STEP = {"name": "deploy", "timeout": "10m"}
COMMAND = {"apply": "./deploy.sh"}
HTTP = {"url": "https://checkout.test/healthz"}


@pytest.mark.parametrize(
    ("file", "definition", "model", "document", "valid"),
    [
        ("service", "Step", Step, {**STEP, "command": COMMAND}, True),
        ("service", "Step", Step, {**STEP, "terraform": {"dir": "infra"}}, True),
        ("service", "Step", Step, STEP, False),
        ("service", "Step", Step, {**STEP, "command": COMMAND, "terraform": {}}, False),
        ("service", "Step", Step, {**STEP, "command": COMMAND, "pulumi": None}, True),  # null: not given
        ("application", "Check", Check, {"http": HTTP}, True),
        ("application", "Check", Check, {"use": "smoke", "with": {"url": "x"}}, True),
        ("application", "Check", Check, {"use": "smoke", "http": HTTP}, False),
        ("application", "Check", Check, {"http": HTTP, "command": {"run": "true"}}, False),
        ("application", "Check", Check, {"when": ["after_deploy"]}, False),
        ("application", "Precondition", Precondition, {"approval": {}}, True),
        ("application", "Precondition", Precondition, {"approval": {}, "stable": {"environment": "a"}}, False),
        ("application", "Precondition", Precondition, {"use": "smoke"}, True),
        ("application", "Protection", Protection, {"command": {"run": "./smoke.sh"}}, True),
        ("application", "Protection", Protection, {"args": {"url": None}}, False),
    ],
)
def test_schema_says_exactly_one_kind_as_loading_does(file, definition, model, document, valid):
    matched = branches_matched(schema(file)["$defs"][definition], document)
    assert (matched == 1) is valid, matched
    assert loads(model, document) is valid


def test_every_kind_has_a_branch_and_rules_have_one_for_use():
    service, application = schema("service")["$defs"], schema("application")["$defs"]

    def keys(definition: dict[str, Any]) -> list[str]:
        return [branch["required"][0] for branch in definition["oneOf"]]

    assert keys(service["Step"]) == ["command", "terraform", "pulumi", "kubernetes", "rollout"]
    assert keys(application["Check"]) == ["command", "alerts", "prometheus", "http", "window", "use"]
    assert keys(application["Precondition"])[-3:] == ["approval", "stable", "use"]
    assert "use" not in keys(application["Protection"])


# (text, accepted): every row is checked against the parser and the schema's pattern.
DURATIONS = [
    ("30s", True),
    ("10m", True),
    ("1h30m", True),
    ("1h 30m", True),
    ("1d 2h 3m 4s", True),
    ("250ms", True),
    ("1.5h", True),
    ("30 m", True),
    (" 5m ", True),
    ("30", False),
    ("", False),
    ("2 hours", False),
    ("3 0m", False),
    ("1m s", False),
    ("-5m", False),
    ("5M", False),
    (".5h", False),
    ("1,5h", False),
    ("1h\n", False),
    ("m", False),
]


def _duration_pattern() -> str:
    """The exported pattern, read as an editor's ECMA-262 regex reads it: there `$` is the end
    of the text, where Python's `$` also matches before a final newline."""
    pattern = schema("service")["$defs"]["Step"]["properties"]["timeout"]["pattern"]
    # Every duration field exports the same pattern.
    assert schema("application")["$defs"]["StableRule"]["properties"]["soak"]["pattern"] == pattern
    assert pattern.endswith("$")
    return pattern.removesuffix("$") + r"\Z"


@pytest.mark.parametrize(("text", "accepted"), DURATIONS)
def test_the_duration_parser_and_the_schema_pattern_agree(text, accepted):
    assert (re.search(_duration_pattern(), text) is not None) is accepted
    try:
        parse_duration(text)
    except ValueError:
        parsed = False
    else:
        parsed = True
    assert parsed is accepted


def test_spaced_durations_add_up_and_a_bare_number_keeps_its_hint():
    assert parse_duration("1h 30m") == parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("1d 2h 3m 4s") == timedelta(days=1, hours=2, minutes=3, seconds=4)
    for bare in (30, "30", " 30 "):
        with pytest.raises(ValueError, match="30 has no unit; write 30s for seconds or 30m for minutes"):
            parse_duration(bare)
    assert schema("service")["$defs"]["Step"]["properties"]["timeout"]["type"] == "string"  # 30 fails it too


def test_the_duration_pattern_stays_linear_for_editors_with_backtracking_regexes():
    started = time.monotonic()
    assert re.search(_duration_pattern(), "1" * 20_000 + " " * 20_000 + "x") is None
    assert re.search(_duration_pattern(), "1m" * 20_000 + "x") is None
    assert time.monotonic() - started < 1
