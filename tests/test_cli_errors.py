"""The CLI at its edges: wrong IDs, wrong states, unreachable or unprepared servers, waits that
cannot end, output nobody reads. Each gets one clear line and the documented exit code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from prodline.workers.devserver import DevServer
from prodline.workers.supervisor import free_port

from conftest import REGISTRY_QUEUE, REPO, WorkerThread, approval_app, client_for, service, step, wait_for, waiting_in


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


@pytest.mark.parametrize("command", [("release", "status", "shop.checkout@1.0.0"), ("release", "list"), ("setup",)])
def test_an_unknown_namespace_is_named_not_mistaken_for_an_unknown_release(cli, command):
    result = cli.run(*command, "--namespace", "no-such-namespace")
    assert result.returncode == 2, result.stderr
    assert "no-such-namespace" in result.stderr and "not found" in result.stderr


# --- output read by a pipe that closes early -------------------------------------------------


@pytest.mark.parametrize("command", [("schema",), ("validate", "{examples}", "--json")])
def test_output_into_a_closed_pipe_ends_quietly(cli, command):
    """`prodline schema | head`: no traceback, no error line, SIGPIPE's exit status as Unix tools give."""
    argv = [part.format(examples=str(REPO / "examples")) for part in command]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write meets a broken pipe
    try:
        result = subprocess.run(
            cli.argv(*argv), env=cli.env, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == 141


# --- a release that has ended shows everything without a worker -------------------------------


def _ended(cli, project, temporal, task_queue, tmp_path, how: str) -> str:
    """A release that ended ``how``, run by a worker that is gone afterwards."""
    worker = WorkerThread(temporal.address, task_queue).start()
    try:
        if how == "rejected":
            service_file = project(service(step("deploy", "true")), app=approval_app())
            release = project.release_id("9.0.0")
            assert cli.run("release", "start", str(service_file), "--version", "9.0.0").returncode == 0
            waiting_in(cli, release, "production")
            assert cli.run("reject", release, "--as", "alice", "--comment", "not today").returncode == 0
        elif how == "cancelled":
            service_file = project(service(step("deploy", "touch ../started; sleep 60")))
            release = project.release_id("9.0.0")
            assert cli.run("release", "start", str(service_file), "--version", "9.0.0").returncode == 0
            wait_for(lambda: (tmp_path / "started").exists(), what="the step to start")
            assert cli.run("release", "cancel", release, "--wait").returncode == 0
        else:
            service_file = project(service(step("deploy", "exit 3" if how == "failed" else "echo deployed-ok")))
            release = project.release_id("9.0.0")
            cli.run("release", "start", str(service_file), "--version", "9.0.0", "--wait")
        wait_for(lambda: cli.json("release", "status", release)["state"] == how, what=f"the release to end {how}")
    finally:
        worker.stop()
    return release


@pytest.mark.parametrize("how", ["succeeded", "failed", "rejected", "cancelled"])
def test_an_ended_release_shows_its_whole_status_with_no_worker(cli, project, temporal, task_queue, tmp_path, how):
    release = _ended(cli, project, temporal, task_queue, tmp_path, how)
    status = cli.json("release", "status", release)
    assert status["state"] == how
    phases = {e["name"]: e["phase"] for e in status["environments"]}
    assert (
        phases
        == {
            "succeeded": {"staging": "succeeded", "production": "succeeded"},
            "failed": {"staging": "failed", "production": "skipped"},
            "rejected": {"staging": "succeeded", "production": "rejected"},
            "cancelled": {"staging": "cancelled", "production": "skipped"},
        }[how]
    )
    assert status["events"][-1]["message"].startswith(f"release {how}")
    if how == "rejected":
        assert [(d["by"], d["verdict"], d["comment"]) for d in status["decisions"]] == [
            ("alice", "reject", "not today")
        ]
    shown = cli.run("release", "status", release)
    assert shown.returncode == 0 and shown.stderr == ""
    assert "staging" in shown.stdout and "recent events:" in shown.stdout
    if how == "succeeded":  # what the step printed, in text too
        assert "output of production/deploy (last lines):\n  deployed-ok" in shown.stdout
    if how == "rejected":
        assert 'alice reject "not today": counted' in shown.stdout.split("decisions:")[1]


def test_a_terminated_release_shows_where_it_stood_with_no_worker(cli, project, temporal, task_queue, tmp_path):
    """Terminated, a release never wrote its final status: its history is replayed to read it."""
    worker = WorkerThread(temporal.address, task_queue).start()
    try:
        service_file = project(service(step("deploy", "touch ../started; sleep 60")))
        release = project.release_id("9.0.0")
        assert cli.run("release", "start", str(service_file), "--version", "9.0.0").returncode == 0
        wait_for(lambda: (tmp_path / "started").exists(), what="the step to start")

        async def terminate() -> None:
            await (await client_for(temporal)).get_workflow_handle(release).terminate("operator pulled the plug")

        asyncio.run(terminate())
    finally:
        worker.stop()
    status = cli.json("release", "status", release)
    assert {e["name"]: e["phase"] for e in status["environments"]} == {"staging": "running", "production": "pending"}
    assert [s["phase"] for s in status["environments"][0]["steps"]] == ["running"]


# --- release list -----------------------------------------------------------------------------


def test_release_list_is_newest_start_first_and_says_what_environment_matches(cli, worker, project):
    service_file = project(service(step("deploy", "true")))
    elsewhere = f"nobody-{uuid.uuid4().hex[:6]}"  # no worker: this release keeps running
    older, newer = project.release_id("9.1.0"), project.release_id("9.1.1")
    assert (
        cli.run("release", "start", str(service_file), "--version", "9.1.0", "--task-queue", elsewhere).returncode == 0
    )
    assert cli.run("release", "start", str(service_file), "--version", "9.1.1", "--wait").returncode == 0

    def listed(*args: str) -> list[str]:
        return [r["release_id"] for r in cli.json("release", "list", "--application", project.application, *args)]

    # Visibility lists running releases first; newest first means by start time.
    wait_for(lambda: len(listed()) == 2, what="both releases in visibility")
    assert listed() == [newer, older]
    assert listed("--limit", "1") == [newer]
    text = cli.run("release", "list", "--application", project.application).stdout.splitlines()
    assert [line.split()[0] for line in text[1:]] == [newer, older]
    assert "where a running release is now" in " ".join(cli.run("release", "list", "--help").stdout.split())
    assert cli.run("release", "cancel", older).returncode == 0


# --- --wait: timeouts, missing or dead workers, Ctrl-C, nothing to do ----------------------------


def test_wait_with_no_worker_keeps_warning_and_gives_up_at_its_timeout(cli, project):
    service_file = project(service(step("deploy", "true")))
    release = project.release_id("9.2.0")
    cli.env["PRODLINE_WORKER_CHECK_SECONDS"] = "0.5"
    # 6 s: room for a second warning on a loaded machine (CI runs two cores' worth of tests).
    result = cli.run("release", "start", str(service_file), "--version", "9.2.0", "--wait", "--timeout", "6s")
    assert result.returncode == 5, result.stderr
    # Once at the start, then again while it waits (each look at a release without a worker takes ~2 s).
    assert result.stderr.count(f"no worker is polling task queue {cli.env['PRODLINE_TASK_QUEUE']!r}") >= 2
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"prodline: error: gave up waiting after 6s: release {release} is still running")
    assert f"the release goes on (follow it with `prodline release status {release}`)" in last
    assert cli.json("release", "status", release)["state"] == "running"

    cancelling = cli.run("release", "cancel", release, "--wait", "--timeout", "1s")
    assert cancelling.returncode == 5
    assert "the cancellation goes on" in cancelling.stderr
    assert cli.run("release", "start", str(service_file), "--version", "9.2.0", "--timeout", "1s").returncode == 2


def test_the_worker_check_looks_at_the_releases_own_task_queue(cli, worker, project):
    service_file = project(service(step("deploy", "true")))
    elsewhere = f"nobody-{uuid.uuid4().hex[:6]}"
    assert (
        cli.run("release", "start", str(service_file), "--version", "9.3.0", "--task-queue", elsewhere).returncode == 0
    )
    # Attaching from the queue a worker polls: the release still waits on its own queue, which none polls.
    again = cli.run("release", "start", str(service_file), "--version", "9.3.0")
    assert again.returncode == 0 and "is already running" in again.stdout
    assert f"no worker is polling task queue {elsewhere!r}" in again.stderr
    assert cli.run("release", "cancel", project.release_id("9.3.0")).returncode == 0


def _stderr_until(process: subprocess.Popen, text: str, timeout: float) -> str:
    """What the process wrote to stderr until ``text`` appeared (or it exited, or ``timeout`` passed)."""
    seen: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if text in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return "".join(seen)


def test_a_worker_that_just_died_is_noticed(cli, project, tmp_path):
    service_file = project(service(step("deploy", "touch ../started; sleep 60")))
    release = project.release_id("9.4.0")
    cli.env["PRODLINE_WORKER_CHECK_SECONDS"] = "1"
    worker = cli.worker()
    try:
        assert cli.run("release", "start", str(service_file), "--version", "9.4.0").returncode == 0
        wait_for(lambda: (tmp_path / "started").exists(), what="the step to start")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker dies mid-step; its poller stays listed for minutes
        worker.wait()
    cancelling = cli.spawn("release", "cancel", release, "--wait")
    try:
        said = _stderr_until(cancelling, "no worker took it", timeout=30)
    finally:
        cancelling.kill()
        cancelling.wait()
    assert f"on task queue {cli.env['PRODLINE_TASK_QUEUE']!r} and no worker took it" in said


def test_ctrl_c_on_wait_says_the_release_goes_on(cli, worker, project, tmp_path):
    service_file = project(service(step("deploy", "touch ../started; while [ ! -f ../gate ]; do sleep 0.05; done")))
    release = project.release_id("9.5.0")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "9.5.0", "--wait")
    wait_for(lambda: (tmp_path / "started").exists(), what="the step to start")
    time.sleep(0.5)  # the CLI is following by now
    waiting.send_signal(signal.SIGINT)
    assert waiting.wait(30) == 130
    said = waiting.stderr.read()
    assert f"prodline: stopped following release {release}; the release goes on" in said
    assert f"`prodline release status {release}`" in said
    assert cli.json("release", "status", release)["state"] == "running"
    (tmp_path / "gate").touch()
    assert cli.run("release", "start", str(service_file), "--version", "9.5.0", "--wait").returncode == 0


def test_an_already_released_version_under_wait_says_so_instead_of_succeeding_again(cli, worker, project):
    service_file = project(service(step("deploy", "echo run >> ../runs")))
    release = project.release_id("9.6.0")
    first = cli.run("release", "start", str(service_file), "--version", "9.6.0", "--wait")
    assert first.returncode == 0 and f"release {release} succeeded" in first.stdout
    again = cli.run("release", "start", str(service_file), "--version", "9.6.0", "--wait")
    assert again.returncode == 0
    (listed,) = cli.json("release", "list", "--application", project.application)
    assert f"release {release} already succeeded at " in again.stdout
    assert f"(run {listed['run_id']}); not released again" in again.stdout
    assert f"release {release} succeeded" not in again.stdout  # nothing ran: no success to report
    as_json = cli.run("release", "start", str(service_file), "--version", "9.6.0", "--wait", "--json")
    assert json.loads(as_json.stdout)["start"] == "already-released"
    assert json.loads(as_json.stdout)["state"] == "succeeded"


# --- a cluster without prodline's search attributes ---------------------------------------------


class _BareServer(DevServer):
    """A dev server as `temporal server start-dev` gives it: none of prodline's search attributes."""

    def command(self) -> list[str]:
        argv = super().command()
        while "--search-attribute" in argv:
            at = argv.index("--search-attribute")
            del argv[at : at + 2]
        return argv


@pytest.fixture
def bare_server(tmp_path):
    server = _BareServer(tmp_path / "bare", port=free_port(), ui=False)
    server.state_dir.mkdir()
    asyncio.run(server.start())
    yield server
    server.stop()


def test_a_namespace_without_search_attributes_points_at_setup_and_setup_registers_them(
    cli, project, bare_server, request
):
    cli.env["TEMPORAL_ADDRESS"] = bare_server.address
    service_file = project(service(step("deploy", "true")))
    # The platform team can register the application before setup (it needs no search attribute).
    registry = WorkerThread(bare_server.address, REGISTRY_QUEUE).start()
    request.addfinalizer(registry.stop)
    refused = cli.run("release", "start", str(service_file), "--version", "9.7.0")
    assert refused.returncode == 6
    assert refused.stderr.count("\n") == 1 and "run `prodline setup` once" in refused.stderr
    assert "namespace 'default' has no search attribute ProdlineApplication" in refused.stderr
    empty = cli.run("release", "list")
    assert empty.returncode == 6 and "run `prodline setup` once" in empty.stderr
    filtered = cli.run("release", "list", "--application", project.application)
    assert filtered.returncode == 6 and "run `prodline setup` once" in filtered.stderr

    setup = cli.run("setup")
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.startswith("registered search attributes ProdlineApplication, ProdlineService")
    again = cli.json("setup")
    assert again == {
        "namespace": "default",
        "added": [],
        "present": [
            "ProdlineApplication",
            "ProdlineService",
            "ProdlineVersion",
            "ProdlineEnvironment",
            "ProdlineState",
        ],
    }
    assert cli.run("release", "start", str(service_file), "--version", "9.7.0").returncode == 0
    assert [r["release_id"] for r in cli.json("release", "list")] == [project.release_id("9.7.0")]


def test_a_runtime_worker_without_its_queue_is_refused(cli):
    """A runtime worker on the control queue would serve nothing it should: say what to give."""
    result = cli.run("worker", "--runtime")
    assert result.returncode == 2
    assert "--runtime serves an environment's own task queue: name it with --task-queue" in result.stderr


def test_manifest_mistakes_are_found_offline_before_anything_is_sent(cli, tmp_path):
    """`validate` and `release start` read a service's manifests: exit 2, file and field named."""
    import shutil

    example = tmp_path / "rollouts"
    shutil.copytree(REPO / "examples/rollouts", example)
    service_file = example / "storefront/prodline.service.yaml"
    original = service_file.read_text()
    cases = {
        "k8s/worker.yaml]": (
            "k8s/workers.yaml]",
            "kubernetes.manifests: manifests entry 'k8s/workers.yaml': no such file",
        ),
        "images: {worker:": ("images: {wrker:", "kubernetes.images: images: no container is named wrker"),
        "    rollout:\n": ("    kubernetes:\n", "has 2 canary `pause: {}` step(s)"),
    }
    for old, (new, expected) in cases.items():
        text = original.replace(old, new)
        if new == "    kubernetes:\n":  # a kubernetes step holding the canary (its rollout-only keys go too)
            text = text[: text.index("      pauses:")] + "    timeout: 1h\n"
        service_file.write_text(text)
        checked = cli.run("validate", str(example))
        assert checked.returncode == 2 and expected in checked.stdout, checked.stdout
        # Refused before anything is packed or sent, as invalid input.
        started = cli.run("release", "start", str(service_file), "--version", "1.0.0")
        assert started.returncode == 2 and expected in started.stderr, started.stderr
        assert "Traceback" not in started.stderr
