"""`prodline dev` and `make demo`: the embedded server keeps its state across runs, stops for real,
and the demo keeps everything it writes under its state dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from prodline.workers.supervisor import free_port, port_open, process_alive

from conftest import REPO


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


class Dev:
    """`prodline dev ... ARGS` on a free port with the test's own state dir."""

    def __init__(self, state: Path):
        self.state, self.port = state, free_port()

    def __call__(self, *args: str, port: int | None = None) -> subprocess.CompletedProcess:
        port = port or self.port
        return prodline("dev", "--state-dir", str(self.state), "--port", str(port), "--headless", *args)


@pytest.fixture
def dev(tmp_path):
    command = Dev(tmp_path / "state")
    yield command
    command("--stop")
    assert servers_of(command.state) == []


def test_stop_returns_once_the_server_is_gone_so_it_can_start_again_at_once(dev):
    started = dev("--detach", "--json")
    assert started.returncode == 0, started.stdout + started.stderr
    assert json.loads(started.stdout)["state"] == "started"
    assert json.loads(dev("--detach", "--json").stdout)["state"] == "already running"
    other = dev("--detach", port=free_port())
    assert other.returncode == 8, "a second --detach on another port for a running state dir"
    assert f"already runs for {dev.state} at 127.0.0.1:{dev.port}" in other.stderr
    assert "prodline dev --stop" in other.stderr

    assert servers_of(dev.state)
    assert dev("--stop").returncode == 0
    assert servers_of(dev.state) == [], "--stop returned while the Temporal server still runs"
    assert not port_open("127.0.0.1", dev.port)
    again = dev("--detach")  # at once, on the same SQLite file
    assert again.returncode == 0, again.stdout + again.stderr
    listed = prodline("release", "list", env=dict(os.environ, TEMPORAL_ADDRESS=f"127.0.0.1:{dev.port}"))
    assert listed.returncode == 0, listed.stdout + listed.stderr


def test_a_server_left_by_a_killed_dev_process_does_not_block_the_next_start(dev):
    started = dev("--detach", "--json")
    assert started.returncode == 0, started.stdout + started.stderr
    os.kill(json.loads(started.stdout)["pid"], signal.SIGKILL)  # no orderly stop: its server runs on
    again = dev("--detach")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(servers_of(dev.state)) == 1


def test_dev_apply_registers_the_application_once_across_restarts(dev):
    """`prodline dev --apply FILE` registers an application, as the platform team would: a release
    of its services can start at once. Started again on the same state, nothing new is registered."""
    example = REPO / "examples/shop/prodline.yaml"
    address = dict(os.environ, TEMPORAL_ADDRESS=f"127.0.0.1:{dev.port}")
    address.pop("PRODLINE_TASK_QUEUE", None)  # the queue `prodline dev` serves: the default
    started = dev("--detach", "--apply", str(example))
    assert started.returncode == 0, started.stdout + started.stderr
    assert "application shop: revision 1 registered" in (dev.state / "dev.log").read_text()
    shown = prodline("app", "show", "shop", "--json", env=address)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    revision = json.loads(shown.stdout)
    assert (revision["number"], revision["applied_by"]) == (1, "prodline dev")

    assert dev("--stop").returncode == 0
    again = dev("--detach", "--apply", str(example))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "application shop: revision 1 unchanged" in (dev.state / "dev.log").read_text()
    history = prodline("app", "history", "shop", "--json", env=address)
    assert history.returncode == 0, history.stdout + history.stderr
    assert [r["number"] for r in json.loads(history.stdout)] == [1]


def test_make_demo_on_another_port_keeps_what_it_writes_in_the_state_dir(tmp_path):
    port, ui_port = free_port(), free_port()
    state = tmp_path / "state"
    examples_before = files_under(REPO / "examples")
    # `-o .venv/.installed`: use the installed venv as it is (others may have touched pyproject.toml).
    settings = [f"STATE_DIR={state}", f"PORT={port}", f"UI_PORT={ui_port}"]
    make = ["make", "-s", "-C", str(REPO), "-o", ".venv/.installed", *settings]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "PRODLINE_"))}
    address = dict(env, TEMPORAL_ADDRESS=f"127.0.0.1:{port}")
    try:
        demo = subprocess.run([*make, "demo"], env=env, capture_output=True, text=True, timeout=300)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert f"Explore it at http://localhost:{ui_port}" in demo.stdout
        assert f"Temporal at 127.0.0.1:{port}" in demo.stdout

        listed = json.loads(prodline("release", "list", "--json", env=address).stdout)
        assert [r["state"] for r in listed] == ["succeeded"]
        # The demo registered the example application (`prodline app apply`) and the release obeyed
        # that revision, with the service's code from a bundle.
        [revision] = json.loads(prodline("app", "history", "shop", "--json", env=address).stdout)
        assert (revision["number"], revision["applied_by"]) == (1, "platform-team")
        status = json.loads(prodline("release", "status", listed[0]["release_id"], "--json", env=address).stdout)
        assert status["revision"] == 1 and status["bundle"].startswith("sha256:")
        for environment in ("staging", "production"):
            assert (state / "demo/terraform" / environment / "terraform.tfstate").is_file()
            assert (state / "demo" / environment / "checkout.version").is_file()
        assert files_under(REPO / "examples") == examples_before, "the demo wrote into examples/"

        stop = subprocess.run([*make, "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert prodline("release", "list", env=address).returncode == 6  # nothing listening any more
        restarted = prodline("dev", "--state-dir", str(state), "--port", str(port), "--headless", "--detach", env=env)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        listed = json.loads(prodline("release", "list", "--json", env=address).stdout)
        assert [r["state"] for r in listed] == ["succeeded"]  # the same SQLite file

        # Release safety as the README shows it on the demo, from the repository's root.
        first = listed[0]["version"]
        running = state / "demo" / "production" / "checkout.version"
        # `make demo` starts the server and worker again, as a user's would, with the demo's store.
        assert prodline("dev", "--state-dir", str(state), "--stop", env=env).returncode == 0
        again = subprocess.run([*make, "demo"], env=env, capture_output=True, text=True)  # a newer version
        assert again.returncode == 0, again.stdout + again.stderr
        back = ("--application", "shop", "--environment", "production")
        rolled = prodline("rollback", "checkout", *back, "--reason", "checkout errors up", "--wait", env=address)
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        assert running.read_text().split() == [first]  # back to the first version, past staging's newer one
        assert prodline("unhold", "checkout", *back, "--reason", "fixed", env=address).returncode == 0
        broken = [*make, "demo", "BREAK=production"]
        assert subprocess.run(broken, env=env, capture_output=True, text=True).returncode == 0
        newest = json.loads(prodline("release", "list", "--limit", "1", "--json", env=address).stdout)[0]
        outcome = json.loads(prodline("release", "status", newest["release_id"], "--json", env=address).stdout)
        assert outcome["state"] == "rolled_back" and outcome["reason"].endswith(f"rolled back to {first}"), outcome
        assert running.read_text().split() == [first]
    finally:
        prodline("dev", "--state-dir", str(state), "--stop")

    # A VENV of its own so that `make clean` leaves the real one alone.
    clean = subprocess.run([*make, f"VENV={tmp_path / 'venv'}", "clean"], env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert not state.exists()
    assert files_under(REPO / "examples") == examples_before


def test_a_detached_dev_runs_this_prodline_not_a_copy_in_the_current_folder(dev, tmp_path):
    # A checkout of another version where the user stands (`python -m` would put it first).
    shadow = tmp_path / "elsewhere"
    (shadow / "prodline").mkdir(parents=True)
    (shadow / "prodline" / "__init__.py").write_text("raise SystemExit('the copy in the current folder ran')\n")
    console_script = Path(sys.executable).parent / "prodline"
    started = subprocess.run(
        [str(console_script), "dev", "--state-dir", str(dev.state), "--port", str(dev.port), "--headless", "--detach"],
        cwd=shadow, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    assert "the copy in the current folder ran" not in (dev.state / "dev.log").read_text()
