"""Wrong IDs, wrong states and unreachable servers: one clear line and the documented exit code."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(
    "command",
    [
        ("release", "status", "shop.nope@1.0.0"),
        ("release", "cancel", "shop.nope@1.0.0"),
        ("approve", "shop.nope@1.0.0"),
        ("reject", "shop.nope@1.0.0"),
    ],
)
def test_unknown_release_ids_exit_7(cli, command):
    result = cli.run(*command)
    assert result.returncode == 7
    assert result.stderr == "prodline: error: no release with ID 'shop.nope@1.0.0'\n"
    as_json = cli.run(*command, "--json")
    assert json.loads(as_json.stdout) == {"error": "no release with ID 'shop.nope@1.0.0'", "exit_code": 7}


@pytest.mark.parametrize(
    "command",
    [("release", "status", "x@1"), ("release", "list"), ("release", "cancel", "x@1"), ("approve", "x@1"), ("worker",)],
)
def test_unreachable_temporal_exits_6_in_one_line(cli, command):
    cli.env["TEMPORAL_ADDRESS"] = "127.0.0.1:1"
    result = cli.run(*command)
    assert result.returncode == 6
    assert result.stderr.startswith("prodline: error: cannot reach Temporal at 127.0.0.1:1")
    assert result.stderr.count("\n") == 1


def test_bad_usage_exits_2(cli, tmp_path):
    assert cli.run("release", "start").returncode == 2
    assert cli.run("release", "list", "--state", "sideways").returncode == 2
    missing = cli.run("validate", "does-not-exist.yaml")
    assert missing.returncode == 2 and "does-not-exist.yaml: file not found" in missing.stdout
    empty = cli.run("validate", str(tmp_path))
    assert empty.returncode == 2 and "no prodline files found" in empty.stdout
