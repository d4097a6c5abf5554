"""Worker logs: one format for prodline's events, the SDK's records and the workflow's own lines."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess

import pytest
import structlog
from temporalio.exceptions import ApplicationError

from prodline.errors import InvalidInput
from prodline.workers import logs

from conftest import service, step, wait_for

SECRET = "s3cr3t-in-the-log-test"


def test_a_worker_logs_json_lines_with_the_release_events_and_a_failed_step_in_one_line(cli, project, tmp_path):
    service_file = project(
        service(
            step("deploy", 'echo "token $PRODLINE_PARAM_TOKEN"; echo disk full >&2; exit 3'),
            head="parameters:\n  token: {type: secret, from_env: LOG_TEST_TOKEN}\n",
        )
    )
    log_file = tmp_path / "worker.log"
    env = {k: v for k, v in cli.env.items() if not k.startswith("PRODLINE_LOG_")}
    with log_file.open("wb") as out:  # not a terminal: JSON by default
        worker = subprocess.Popen(
            cli.argv("worker"), env=dict(env, LOG_TEST_TOKEN=SECRET), stdout=out, stderr=out,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_for(lambda: "worker.started" in log_file.read_text(), what="the worker to start")
        release = cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait")
        assert release.returncode == 1, release.stdout + release.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)

    text = log_file.read_text()
    assert "\x1b[" not in text
    assert "Traceback" not in text
    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert all({"event", "level", "timestamp", "logger"} <= line.keys() for line in lines)

    release_id = project.release_id("1.0.0")
    [failed] = [line for line in lines if line["event"] == "Completing activity as failed"]
    assert failed["level"] == "warning"
    assert failed["logger"] == "temporalio.activity"
    assert "disk full" in failed["error"]
    assert failed["workflow_id"] == release_id
    assert "exception" not in failed

    workflow = [line for line in lines if line["logger"] == "temporalio.workflow"]
    assert workflow, "the workflow's own log lines were dropped"
    assert {line["release"] for line in workflow} == {release_id}
    assert any(line["environment"] == "staging" and line["level"] == "info" for line in workflow)
    assert not any("({" in line["event"] for line in workflow)  # the SDK's context is in fields, not the text


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("temporalio", "temporalio.workflow")}
    root_level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(root_level)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    structlog.reset_defaults()


def _failure(exc: Exception) -> None:
    try:
        raise exc
    except Exception:
        logging.getLogger("temporalio.activity").warning("Completing activity as failed", exc_info=True)


def test_unexpected_exceptions_keep_their_traceback(restore_logging, monkeypatch):
    monkeypatch.delenv("PRODLINE_LOG_FORMAT", raising=False)
    out = io.StringIO()  # not a terminal
    logs.configure(stream=out)
    _failure(ApplicationError("exit code 3", type="CommandFailed"))
    _failure(KeyError("bug"))
    expected, unexpected = (json.loads(line) for line in out.getvalue().splitlines())
    assert (expected["error"], expected["error_type"]) == ("exit code 3", "CommandFailed")
    assert "exception" not in expected
    assert "Traceback" in unexpected["exception"] and "KeyError: 'bug'" in unexpected["exception"]


def test_console_format_has_key_values_and_no_colours_off_a_terminal(restore_logging, monkeypatch):
    monkeypatch.setenv("PRODLINE_LOG_FORMAT", "console")
    out = io.StringIO()
    logs.configure(stream=out)
    logging.getLogger("temporalio.workflow").info("promoting to staging", extra={"environment": "staging"})
    logging.getLogger("temporalio.worker").info("SDK internals stay quiet below WARNING")
    [line] = out.getvalue().splitlines()
    assert "promoting to staging" in line and "environment=staging" in line
    assert "\x1b[" not in line


@pytest.mark.parametrize(("variable", "value"), [("PRODLINE_LOG_FORMAT", "yaml"), ("PRODLINE_LOG_LEVEL", "loud")])
def test_a_bad_log_setting_is_named(restore_logging, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidInput, match=variable):
        logs.configure(stream=io.StringIO())
