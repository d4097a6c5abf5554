"""`prodline dev`: the embedded server keeps its state across runs; the demo example releases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prodline.workers.devserver import free_port

REPO = Path(__file__).resolve().parent.parent


def test_dev_server_keeps_releases_across_restarts(tmp_path):
    port = free_port()
    env = dict(
        os.environ,
        TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        PRODLINE_POLL_SECONDS="0.1",
        PRODLINE_DEMO_STATE=str(tmp_path / "live"),
    )

    def prodline(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "prodline.cli", *args], env=env, capture_output=True, text=True, timeout=180
        )

    dev = ["dev", "--state-dir", str(tmp_path / "state"), "--port", str(port), "--headless"]
    try:
        started = prodline(*dev, "--detach", "--json")
        assert started.returncode == 0, started.stdout + started.stderr
        assert json.loads(started.stdout)["state"] == "started"
        assert json.loads(prodline(*dev, "--detach", "--json").stdout)["state"] == "already running"

        example = str(REPO / "examples/shop/checkout/prodline.service.yaml")
        release = prodline("release", "start", example, "--version", "7.7.7", "--wait")
        assert release.returncode == 0, release.stdout + release.stderr
        assert (tmp_path / "live/production/checkout.version").read_text().strip() == "7.7.7"

        assert prodline(*dev, "--stop").returncode == 0
        assert prodline("release", "list").returncode == 6  # nothing listening any more

        assert prodline(*dev, "--detach").returncode == 0  # same SQLite file
        listed = json.loads(prodline("release", "list", "--json").stdout)
        assert [(r["release_id"], r["state"]) for r in listed] == [("shop.checkout@7.7.7", "succeeded")]
    finally:
        prodline(*dev, "--stop")
    assert (tmp_path / "state/temporal.db").exists()
