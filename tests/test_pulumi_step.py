"""The pulumi step. The Pulumi CLI cannot be installed on these machines: the tests
that need it are skipped here (with the reason) and run wherever `pulumi` is on PATH."""

from __future__ import annotations

import importlib.util
import json
import shutil
import textwrap

import pytest

from prodline.config import validate_files

from conftest import approval_app, waiting_in

PULUMI_SERVICE = """
service: checkout
application: shop
steps:
  - name: infra
    pulumi:
      dir: infra
      stack: "{{ environment }}"
      config: {"checkout:version": "{{ version }}"}
      backend_url: BACKEND
    retry: {attempts: 1}
"""

needs_cli = pytest.mark.skipif(
    shutil.which("pulumi") is None or importlib.util.find_spec("pulumi") is None,
    reason="needs the pulumi CLI and `pip install prodline[pulumi]`; the CLI cannot be installed on these machines",
)


def test_pulumi_steps_validate_like_any_step(project):
    service_file = project(PULUMI_SERVICE.replace("BACKEND", "file:///tmp/pulumi-state"), app=approval_app())
    assert validate_files([service_file.parent.parent / "prodline.yaml", service_file]) == []
    broken = project(PULUMI_SERVICE.replace("BACKEND", "x").replace("stack:", "stak:"), app=approval_app())
    problems = [str(p) for p in validate_files([broken])]
    assert any("steps[0].pulumi.stak: unknown key 'stak' (hint: did you mean 'stack'?)" in p for p in problems), (
        problems
    )


@pytest.mark.skipif(importlib.util.find_spec("pulumi") is not None, reason="the Pulumi SDK is installed here")
def test_without_the_pulumi_sdk_the_release_fails_with_how_to_fix_it(cli, worker, project):
    service_file = project(PULUMI_SERVICE.replace("BACKEND", "file:///tmp/pulumi-state"), app=approval_app())
    result = cli.run("release", "start", str(service_file), "--version", "6.0.0", "--wait", "--json")
    assert result.returncode == 1
    reason = json.loads(result.stdout)["reason"]
    assert reason == (
        "staging: step infra failed: the pulumi step needs the Pulumi SDK (`pip install prodline[pulumi]`) "
        "and the pulumi CLI on the worker"
    )


@needs_cli
def test_preview_is_shown_before_approval_and_up_applies_that_plan(cli, worker, project, tmp_path):
    service_file = project(PULUMI_SERVICE.replace("BACKEND", f"file://{tmp_path / 'state'}"), app=approval_app())
    (tmp_path / "state").mkdir()
    infra = service_file.parent / "infra"
    infra.mkdir()
    (infra / "Pulumi.yaml").write_text("name: checkout\nruntime: python\n")
    (infra / "__main__.py").write_text(
        textwrap.dedent("""\
        import pulumi
        config = pulumi.Config()
        pulumi.export("url", f"https://{pulumi.get_stack()}.shop.test/{config.require('version')}")
        """)
    )
    release = project.release_id("6.0.1")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "6.0.1", "--wait")
    status = waiting_in(cli, release, "production", "approvals")
    assert status["environments"][1]["steps"][0]["summary"] != ""
    assert cli.run("approve", release, "--as", "alice").returncode == 0
    assert waiting.wait(300) == 0
