"""Releases end to end: the CLI starts them, the real worker runs them on real Temporal."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import APP, history_text, ledgers, process_alive, service, step, wait_for


def test_release_goes_through_staging_then_production(cli, worker, project, tmp_path, temporal):
    service_file = project(
        service(
            step("deploy", "./deploy.sh"),
            head="parameters:\n  replicas: {type: int, default: 1}\n"
            "environments:\n  production:\n    parameters: {replicas: 3}\n",
        ),
        scripts={
            "deploy.sh": 'echo "$PRODLINE_VERSION x$PRODLINE_PARAM_REPLICAS" >> "../deployed-$PRODLINE_ENVIRONMENT"\n'
        },
    )
    result = cli.run("release", "start", str(service_file), "--version", "2.0.1", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"release {project.release_id('2.0.1')} succeeded" in result.stdout
    assert "staging" in result.stdout and "production" in result.stdout
    # Each environment was deployed exactly once, in order, with its own parameters.
    assert (tmp_path / "deployed-staging").read_text() == "2.0.1 x1\n"
    assert (tmp_path / "deployed-production").read_text() == "2.0.1 x3\n"
    staging_line = result.stdout.index("2.0.1 is live in staging")
    assert staging_line < result.stdout.index("promoting to production")

    listed = cli.json(
        "release", "list", "--application", project.application, "--service", "checkout", "--state", "succeeded"
    )
    assert [r["release_id"] for r in listed] == [project.release_id("2.0.1")]

    staging, production = ledgers(temporal, project)
    assert [(r.version, r.state.value) for r in staging] == [("2.0.1", "succeeded")]
    assert [(r.version, r.state.value) for r in production] == [("2.0.1", "succeeded")]
    assert staging[0].finished_at <= production[0].started_at


def test_failing_step_stops_release_and_leaves_production_untouched(cli, worker, project, tmp_path, temporal):
    service_file = project(
        service(step("migrate", "./migrate.sh"), step("deploy", "./deploy.sh")),
        scripts={
            "migrate.sh": 'echo "column exists" >&2\n[ "$PRODLINE_ENVIRONMENT" != staging ] || exit 3\n',
            "deploy.sh": 'touch "../deployed-$PRODLINE_ENVIRONMENT"\n',
        },
    )
    result = cli.run("release", "start", str(service_file), "--version", "2.0.2", "--wait", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "failed"
    assert "staging: step migrate failed" in outcome["reason"]
    assert "exited with code 3" in outcome["reason"] and "column exists" in outcome["reason"]
    phases = {e["name"]: e["phase"] for e in outcome["environments"]}
    assert phases == {"staging": "failed", "production": "skipped"}
    assert not (tmp_path / "deployed-staging").exists()
    assert not (tmp_path / "deployed-production").exists()

    staging, production = ledgers(temporal, project)
    assert [r.state.value for r in staging] == ["failed"]
    assert production == []


def test_retryable_exit_code_is_retried_and_others_are_not(cli, worker, project, tmp_path):
    service_file = project(
        service(
            step("flaky", "./flaky.sh", ", retryable_exit_codes: [75]"),
            step("broken", "./broken.sh", ", retryable_exit_codes: [75]"),
        ),
        scripts={
            "flaky.sh": 'echo x >> ../flaky-count\n[ "$(wc -l < ../flaky-count)" -ge 2 ] || exit 75\n',
            "broken.sh": "echo x >> ../broken-count\nexit 4\n",
        },
    )
    result = cli.run("release", "start", str(service_file), "--version", "2.0.3", "--wait")
    assert result.returncode == 1
    assert (tmp_path / "flaky-count").read_text().count("x") == 2  # failed once with 75, retried, passed
    assert (tmp_path / "broken-count").read_text().count("x") == 1  # exit 4 is not retryable
    assert "step broken failed" in result.stdout


def test_duplicate_start_attaches_to_the_running_release(cli, worker, project, tmp_path):
    gate = tmp_path / "gate"
    service_file = project(
        service(step("deploy", "./deploy.sh")),
        scripts={"deploy.sh": f"echo run >> ../runs\nwhile [ ! -f {gate} ]; do sleep 0.05; done\n"},
    )
    first = cli.json("release", "start", str(service_file), "--version", "2.0.4")
    wait_for(lambda: (tmp_path / "runs").exists(), what="the first step to start")
    second = cli.json("release", "start", str(service_file), "--version", "2.0.4")
    assert first["start"] == "started" and second["start"] == "attached"
    assert first["run_id"] == second["run_id"]
    gate.touch()
    waited = cli.run("release", "start", str(service_file), "--version", "2.0.4", "--wait")
    assert waited.returncode == 0
    assert (tmp_path / "runs").read_text().count("run") == 2  # staging and production, no duplicate release
    again = cli.json("release", "start", str(service_file), "--version", "2.0.4")
    assert again["start"] == "already-released"


def test_cancel_stops_the_running_command(cli, worker, project, tmp_path):
    service_file = project(
        service(step("deploy", "./deploy.sh")),
        # The script starts a grandchild: cancelling must stop it too.
        scripts={"deploy.sh": "sleep 300 &\necho $! > ../child.pid\necho $$ > ../script.pid\nwait\n"},
    )
    waiting = cli.spawn("release", "start", str(service_file), "--version", "2.0.5", "--wait")
    wait_for(lambda: (tmp_path / "child.pid").exists() and (tmp_path / "script.pid").exists(), what="the step to start")
    pids = [int((tmp_path / name).read_text()) for name in ("child.pid", "script.pid")]
    result = cli.run("release", "cancel", project.release_id("2.0.5"), "--wait")
    assert result.returncode == 0, result.stderr
    assert "cancelled" in result.stdout
    for pid in pids:
        assert not process_alive(pid), f"process {pid} survived the cancellation"
    assert waiting.wait(30) == 4  # exit code for "cancelled"
    assert f"release {project.release_id('2.0.5')} cancelled" in waiting.stdout.read()
    assert cli.run("release", "cancel", project.release_id("2.0.5")).returncode == 8


def test_a_cancel_reaches_a_running_command_within_seconds(cli, worker, project, tmp_path):
    # The default heartbeat timeout (30 s): the SDK alone would pass the cancel on after 24 s.
    service_file = project("service: checkout\napplication: shop\nsteps:\n"
                           "  - name: deploy\n    command: {apply: 'touch ../started; sleep 120'}\n")  # fmt: skip
    release = project.release_id("2.0.11")
    assert cli.run("release", "start", str(service_file), "--version", "2.0.11").returncode == 0
    wait_for(lambda: (tmp_path / "started").exists(), what="the step to start")
    asked = time.monotonic()
    assert cli.run("release", "cancel", release, "--wait").returncode == 0
    assert time.monotonic() - asked < 10


def gated_check_app(when: str, folder: Path) -> str:
    """Staging with a check that runs until the test creates the file `gate` in ``folder``
    (checks run in a copy of the application's bundle: the test's folder is named by path)."""
    return APP.replace(
        "  - name: staging\n",
        "  - name: staging\n    checks:\n"
        f"      - command: {{run: 'touch {folder}/started; while [ ! -f {folder}/gate ]; do sleep 0.05; done'}}\n"
        f"        name: smoke\n        when: [{when}]\n",
    )


def cancel_during_the_check(cli, temporal, tmp_path, release: str, *cancel_args: str):
    """Cancel while the check runs, then let the check pass: rule evaluations do not heartbeat,
    so the cancel reaches the workflow only and the check finishes as if nothing happened."""
    wait_for(lambda: (tmp_path / "started").exists(), what="the check to start")
    cancelling = cli.spawn("release", "cancel", release, *cancel_args)
    wait_for(lambda: "ACTIVITY_TASK_CANCEL_REQUESTED" in history_text(temporal, release), what="the cancel")
    (tmp_path / "gate").touch()
    return cancelling


@pytest.mark.parametrize(
    ("when", "deployed", "phases"),
    [
        ("before_deploy", [], ["cancelled", "skipped"]),  # staging's step never starts
        ("after_deploy", ["staging"], ["succeeded", "skipped"]),  # staging is live; production never starts
    ],
)
def test_a_cancel_the_running_check_never_hears_of_still_stops_the_release(
    cli, worker, project, tmp_path, temporal, when, deployed, phases
):
    service_file = project(
        service(step("deploy", 'touch "../deployed-$PRODLINE_ENVIRONMENT"')), app=gated_check_app(when, tmp_path)
    )
    release = project.release_id("2.0.7")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "2.0.7", "--wait")
    cancelling = cancel_during_the_check(cli, temporal, tmp_path, release, "--wait")
    assert cancelling.wait(60) == 0, cancelling.stdout.read()
    assert waiting.wait(60) == 4, waiting.stdout.read()
    assert sorted(p.name.removeprefix("deployed-") for p in tmp_path.glob("deployed-*")) == deployed
    status = cli.json("release", "status", release)
    assert status["state"] == "cancelled"
    assert [e["phase"] for e in status["environments"]] == phases
    staging, production = ledgers(temporal, project)
    assert production == []  # nothing recorded where nothing ran
    assert [r.state.value for r in staging] == (["succeeded"] if deployed else ["cancelled"])


def test_cancel_wait_says_so_when_the_release_finished_first(cli, worker, project, tmp_path, temporal):
    app = gated_check_app("after_deploy", tmp_path).replace("  - name: production\n", "")
    service_file = project(service(step("deploy", "true")), app=app)
    release = project.release_id("2.0.10")
    assert cli.run("release", "start", str(service_file), "--version", "2.0.10").returncode == 0
    # The last check passes after the cancel: the version is live, so the release succeeds.
    cancelling = cancel_during_the_check(cli, temporal, tmp_path, release, "--wait")
    assert cancelling.wait(60) == 8
    assert f"release {release} succeeded" in cancelling.stdout.read()


def test_worker_restart_does_not_rerun_completed_steps(cli, project, tmp_path, temporal, cli_env):
    gate = tmp_path / "gate"
    service_file = project(
        service(step("first", "./first.sh"), step("second", "./second.sh")),
        scripts={
            "first.sh": 'echo "$PRODLINE_ENVIRONMENT" >> ../first-runs\n',
            "second.sh": f'echo "$PRODLINE_ENVIRONMENT" >> ../second-runs\nwhile [ ! -f {gate} ]; do sleep 0.05; done\n',
        },
    )
    worker = cli.worker()
    try:
        cli.json("release", "start", str(service_file), "--version", "2.0.6")
        wait_for(lambda: (tmp_path / "second-runs").exists(), what="the second step to start")
        os.killpg(worker.pid, signal.SIGKILL)  # the worker dies mid-step
        worker.wait()
        gate.touch()
        worker = cli.worker()
        result = cli.run("release", "start", str(service_file), "--version", "2.0.6", "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    # `first` completed before the crash: it never runs again in staging.
    assert (tmp_path / "first-runs").read_text().split() == ["staging", "production"]
    # `second` was cut off mid-run, so Temporal retried it once the heartbeat timed out.
    assert (tmp_path / "second-runs").read_text().split() == ["staging", "staging", "production"]


def test_secret_parameters_reach_the_command_but_not_history(cli, worker, project, tmp_path, temporal, monkeypatch):
    secret = "s3cr3t-value-42"
    monkeypatch.setenv("CHECKOUT_DB_PASSWORD", secret)  # the worker thread reads its process environment
    service_file = project(
        service(
            step("deploy", "./deploy.sh"),
            head="parameters:\n  db_password: {type: secret, from_env: CHECKOUT_DB_PASSWORD}\n",
        ),
        scripts={
            "deploy.sh": 'echo "$PRODLINE_PARAM_DB_PASSWORD" > ../seen\necho "password is $PRODLINE_PARAM_DB_PASSWORD"\n'
        },
    )
    result = cli.run("release", "start", str(service_file), "--version", "2.0.7", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "seen").read_text().strip() == secret

    history = history_text(temporal, project.release_id("2.0.7"))
    assert "CHECKOUT_DB_PASSWORD" in history  # the payloads really are decoded: the variable's name is there
    assert secret not in history
    assert secret not in result.stdout


def test_cli_reports_unreachable_temporal_in_one_line(cli, project):
    service_file = project(service(step("deploy", "true")))
    cli.auto_apply = False  # nothing to register with: Temporal is unreachable
    cli.env["TEMPORAL_ADDRESS"] = "127.0.0.1:1"
    result = cli.run("release", "start", str(service_file), "--version", "1.0.0")
    assert result.returncode == 6
    assert result.stderr.count("\n") == 1 and "cannot reach Temporal at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_start_without_a_worker_warns_and_the_release_waits(cli, project):
    service_file = project(service(step("deploy", "true")))
    result = cli.run("release", "start", str(service_file), "--version", "2.0.8")
    assert result.returncode == 0
    assert f"no worker is polling task queue {cli.env['PRODLINE_TASK_QUEUE']!r}" in result.stderr
    status = cli.json("release", "status", project.release_id("2.0.8"))
    assert status["state"] == "running"
    unconfirmed = cli.run("approve", project.release_id("2.0.8"), "--as", "alice")
    assert unconfirmed.returncode == 6 and "does not answer (is a worker running?)" in unconfirmed.stderr
    cancelling = cli.spawn("release", "cancel", project.release_id("2.0.8"), "--wait")
    try:  # nothing can stop it without a worker: say so rather than hang in silence
        assert "no worker is polling task queue" in cancelling.stderr.readline()
    finally:
        cancelling.kill()


def test_attaching_with_a_changed_config_warns_that_the_running_release_is_kept(cli, project):
    service_file = project(service(step("deploy", "true")))
    assert cli.run("release", "start", str(service_file), "--version", "2.0.9").returncode == 0
    service_file.write_text(service_file.read_text().replace("apply: 'true'", "apply: 'echo changed'"))
    again = cli.run("release", "start", str(service_file), "--version", "2.0.9", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["start"] == "attached"
    assert "was started with a different config; following the existing release" in again.stderr
    assert cli.run("release", "cancel", project.release_id("2.0.9")).returncode == 0
