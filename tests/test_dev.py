"""`prodline dev` and `make demo`: the embedded server keeps its state across runs, stops for real,
and the demo keeps everything it writes under its state dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from prodline.workers.supervisor import free_port, port_open, process_alive

REPO = Path(__file__).resolve().parent.parent


def prodline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prodline.cli", *args], env=env, capture_output=True, text=True, timeout=180
    )


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if "__pycache__" not in path.parts}


def servers_of(state: Path) -> list[int]:
    """The live processes whose command line names this state dir's SQLite file."""
    database = str(state / "temporal.db").encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if database in cmdline.read_bytes() and process_alive(int(cmdline.parent.name)):
                pids.append(int(cmdline.parent.name))
        except OSError:  # it has just exited
            pass
    return pids


def test_stop_returns_once_the_server_is_gone_so_it_can_start_again_at_once(tmp_path):
    port = free_port()
    dev = ["dev", "--state-dir", str(tmp_path / "state"), "--port", str(port), "--headless"]
    try:
        started = prodline(*dev, "--detach", "--json")
        assert started.returncode == 0, started.stdout + started.stderr
        assert json.loads(started.stdout)["state"] == "started"
        assert json.loads(prodline(*dev, "--detach", "--json").stdout)["state"] == "already running"

        assert servers_of(tmp_path / "state")
        assert prodline(*dev, "--stop").returncode == 0
        assert servers_of(tmp_path / "state") == [], "--stop returned while the Temporal server still runs"
        assert not port_open("127.0.0.1", port)
        again = prodline(*dev, "--detach")  # at once, on the same SQLite file
        assert again.returncode == 0, again.stdout + again.stderr
        listed = prodline("release", "list", env=dict(os.environ, TEMPORAL_ADDRESS=f"127.0.0.1:{port}"))
        assert listed.returncode == 0, listed.stdout + listed.stderr
    finally:
        prodline(*dev, "--stop")
    assert not port_open("127.0.0.1", port)


def test_a_server_left_by_a_killed_dev_process_does_not_block_the_next_start(tmp_path):
    port = free_port()
    dev = ["dev", "--state-dir", str(tmp_path / "state"), "--port", str(port), "--headless"]
    try:
        started = prodline(*dev, "--detach", "--json")
        assert started.returncode == 0, started.stdout + started.stderr
        os.kill(json.loads(started.stdout)["pid"], signal.SIGKILL)  # no orderly stop: its server runs on
        again = prodline(*dev, "--detach")
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(servers_of(tmp_path / "state")) == 1
    finally:
        prodline(*dev, "--stop")
    assert servers_of(tmp_path / "state") == []


def test_detach_refuses_another_port_for_a_running_state_dir(tmp_path):
    port = free_port()
    state = ["dev", "--state-dir", str(tmp_path / "state"), "--headless"]
    try:
        assert prodline(*state, "--port", str(port), "--detach").returncode == 0
        other = prodline(*state, "--port", str(free_port()), "--detach")
        assert other.returncode == 8
        assert f"already runs for {tmp_path / 'state'} at 127.0.0.1:{port}" in other.stderr
        assert "prodline dev --stop" in other.stderr
    finally:
        prodline(*state, "--stop")


def test_make_demo_on_another_port_keeps_what_it_writes_in_the_state_dir(tmp_path):
    port = free_port()
    state = tmp_path / "state"
    examples_before = files_under(REPO / "examples")
    # `-o .venv/.installed`: use the installed venv as it is (others may have touched pyproject.toml).
    make = ["make", "-s", "-C", str(REPO), "-o", ".venv/.installed", f"STATE_DIR={state}", f"PORT={port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "PRODLINE_"))}
    address = dict(env, TEMPORAL_ADDRESS=f"127.0.0.1:{port}")
    try:
        demo = subprocess.run([*make, "demo"], env=env, capture_output=True, text=True, timeout=300)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert f"http://localhost:{port + 1000}" in demo.stdout
        assert f"Temporal at 127.0.0.1:{port}" in demo.stdout

        listed = json.loads(prodline("release", "list", "--json", env=address).stdout)
        assert [r["state"] for r in listed] == ["succeeded"]
        for environment in ("staging", "production"):
            assert (state / "demo/terraform" / environment / "terraform.tfstate").is_file()
            assert (state / "demo" / environment / "checkout.version").is_file()
        assert files_under(REPO / "examples") == examples_before, "the demo wrote into examples/"

        stop = subprocess.run([*make, "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert prodline("release", "list", env=address).returncode == 6  # nothing listening any more
        restarted = prodline("dev", "--state-dir", str(state), "--port", str(port), "--detach", env=env)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        listed = json.loads(prodline("release", "list", "--json", env=address).stdout)
        assert [r["state"] for r in listed] == ["succeeded"]  # the same SQLite file
    finally:
        prodline("dev", "--state-dir", str(state), "--stop")

    # A VENV of its own so that `make clean` leaves the real one alone.
    clean = subprocess.run([*make, f"VENV={tmp_path / 'venv'}", "clean"], env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert not state.exists()
    assert files_under(REPO / "examples") == examples_before
