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
    assert result.stderr.startswith("prodline: error: cannot reach Temporal at 127.0.0.1:1: connection refused")
    assert result.stderr.count("\n") == 1


def test_bad_usage_exits_2(cli, tmp_path):
    assert cli.run("release", "start").returncode == 2
    assert cli.run("release", "list", "--state", "sideways").returncode == 2
    missing = cli.run("validate", "does-not-exist.yaml")
    assert missing.returncode == 2 and "does-not-exist.yaml: file not found" in missing.stdout
    empty = cli.run("validate", str(tmp_path))
    assert empty.returncode == 2 and "no prodline files found" in empty.stdout


def test_usage_errors_are_one_line_and_json_when_asked(cli, tmp_path):
    missing = cli.run("release", "start", "svc.yaml")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "prodline release start: the following arguments are required: --version" in missing.stderr
    as_json = cli.run("release", "list", "--json", "--limit", "abc")
    assert as_json.returncode == 2
    assert "argument --limit: invalid int value: 'abc'" in json.loads(as_json.stdout)["error"]
    assert "not a TCP port" in cli.run("dev", "--port", "99999").stderr
    (tmp_path / "afile").touch()
    state_is_a_file = cli.run("dev", "--detach", "--state-dir", str(tmp_path / "afile"))
    assert state_is_a_file.returncode == 2 and "is a file, not a folder" in state_is_a_file.stderr


def test_an_unknown_namespace_is_named_not_mistaken_for_an_unknown_release(cli):
    result = cli.run("release", "status", "shop.checkout@1.0.0", "--namespace", "no-such-namespace")
    assert result.returncode == 2
    assert "no-such-namespace" in result.stderr and "not found" in result.stderr
