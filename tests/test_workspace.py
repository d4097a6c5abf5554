"""An attempt's workspace: a checkout under the cache root, heartbeats while it is made, a cancel
that waits for it, and a sweep of what killed workers left behind."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from prodline.activities.workspace import attempt_workspace, current_workspace, sweep_workspaces
from prodline.artifacts.bundle import pack, upload
from prodline.artifacts.store import LocalArtifactStore
from prodline.config.release import BundleRef
from prodline.contracts import ReleaseRef, RunContext

SERVICE = {"service.yaml": "service: api\n", "deploy.sh": "#!/bin/sh\necho deploy\n", "infra/main.tf": "# tf\n"}
OLD = time.time() - 3 * 24 * 3600


class SlowStore(LocalArtifactStore):
    """A store whose downloads take ``delay`` seconds, as a cold fetch of a big bundle does."""

    def __init__(self, root: Path, delay: float = 0.0):
        super().__init__(root)
        self.delay = delay
        self.finished: list[float] = []  # when each download returned

    def get_to_file(self, key: str, path: Path) -> None:
        time.sleep(self.delay)
        super().get_to_file(key, path)
        self.finished.append(time.monotonic())


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PRODLINE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "bundles"


def bundle(tmp_path: Path, store: LocalArtifactStore) -> BundleRef:
    root = tmp_path / "source"
    for rel, text in SERVICE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    with pack(root) as packed:
        upload(packed, store)
        return packed.ref


def context_for(ref: BundleRef) -> RunContext:
    return RunContext(**ReleaseRef.of("app", "api", "1.0.0"), environment="staging", bundle=ref, base_dir=".")


def files(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): p.read_text() for p in sorted(tree.rglob("*")) if p.is_file()}


def activity_env(heartbeat_timeout: float) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=heartbeat_timeout))
    return env


async def test_an_attempt_works_in_its_own_copy_under_the_cache_root_removed_when_it_ends(tmp_path, cache_dir):
    store = SlowStore(tmp_path / "store")
    ref = bundle(tmp_path, store)

    async with attempt_workspace(context_for(ref), store) as code:
        assert code is not None and current_workspace() == code
        assert code.parent.parent == cache_dir / "attempts"  # the cache's filesystem, not /tmp
        assert files(code) == SERVICE
        (code / "scratch.txt").write_text("left by the step")
    assert list((cache_dir / "attempts").iterdir()) == []
    assert current_workspace() is None


async def test_a_slow_checkout_heartbeats_so_the_step_does_not_time_out(tmp_path, cache_dir):
    store = SlowStore(tmp_path / "store", delay=0.8)  # four heartbeat intervals
    ref = bundle(tmp_path, store)
    env = activity_env(heartbeat_timeout=0.6)  # beats every 0.2 s
    beats: list[tuple] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    async def step(context: RunContext) -> dict[str, str]:
        async with attempt_workspace(context, store) as code:
            assert code is not None
            return files(code)

    assert await env.run(step, context_for(ref)) == SERVICE
    assert len(beats) >= 2 and beats[0] == ({"checkout": ref.digest},)


async def test_a_cancel_during_the_checkout_waits_for_it_and_leaves_no_folder(tmp_path, cache_dir):
    store = SlowStore(tmp_path / "store", delay=0.6)
    ref = bundle(tmp_path, store)
    env = activity_env(heartbeat_timeout=0.6)
    asyncio.get_running_loop().call_later(0.2, env.cancel)  # the release is cancelled mid-checkout

    async def step(context: RunContext) -> None:
        async with attempt_workspace(context, store):
            raise AssertionError("a cancelled attempt must not run its step")

    with pytest.raises(asyncio.CancelledError):
        await env.run(step, context_for(ref))
    cancelled = time.monotonic()

    assert store.finished and store.finished[0] <= cancelled  # the checkout had ended first
    await asyncio.sleep(0.2)  # nothing still writing would show up now
    assert list((cache_dir / "attempts").iterdir()) == []


# --- leftovers ------------------------------------------------------------------------------------


KILLED = """\
import asyncio, os, signal, sys
from pathlib import Path
from prodline.activities.workspace import attempt_workspace
from prodline.artifacts.store import LocalArtifactStore
from prodline.config.release import BundleRef
from prodline.contracts import ReleaseRef, RunContext

ref = BundleRef.model_validate_json(sys.argv[2])
context = RunContext(**ReleaseRef.of("app", "api", "1.0.0"), environment="staging", bundle=ref, base_dir=".")

async def main():
    async with attempt_workspace(context, LocalArtifactStore(Path(sys.argv[1]))) as code:
        (code / "infra").chmod(0o500)  # a step leaving a folder it cannot write in
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def leftover_of_a_killed_worker(tmp_path: Path, store: LocalArtifactStore, ref: BundleRef) -> Path:
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    run = subprocess.run([sys.executable, str(script), str(store.root), ref.model_dump_json()], check=False)
    assert run.returncode == -signal.SIGKILL
    (left,) = (Path(os.environ["PRODLINE_CACHE_DIR"]) / "bundles" / "attempts").iterdir()
    os.utime(left, (OLD, OLD))
    return left


async def test_sweep_removes_what_a_killed_worker_left_and_keeps_live_and_recent_attempts(tmp_path, cache_dir):
    store = SlowStore(tmp_path / "store")
    ref = bundle(tmp_path, store)
    dead = leftover_of_a_killed_worker(tmp_path, store, ref)
    assert (dead / "code/service.yaml").is_file()  # it did leave its checkout behind
    recent = cache_dir / "attempts" / "recent"
    recent.mkdir()  # just created by an attempt that has not locked it yet

    async with attempt_workspace(context_for(ref), store) as live:
        assert live is not None
        os.utime(live.parent, (OLD, OLD))  # a long step of another worker on the same cache
        removed = sweep_workspaces()
        assert live.is_dir() and files(live) == SERVICE

    assert removed == 1 and not dead.exists() and recent.is_dir()


def test_sweep_removes_stale_downloads_and_the_old_layouts_trees_but_not_a_fetch_under_way(tmp_path, cache_dir):
    legacy = cache_dir / ("a" * 64)  # the extracted tree of the previous cache layout, read-only
    (legacy / "sub").mkdir(parents=True)
    (legacy / "sub/f").write_text("x")
    for path in (legacy / "sub/f", legacy / "sub", legacy):
        path.chmod(0o555 if path.is_dir() else 0o444)
    incoming, locks = cache_dir / ".incoming", cache_dir / ".locks"
    incoming.mkdir()
    locks.mkdir()
    stale, fetching, fresh = (incoming / f"{c * 64}.x.tar" for c in "bcd")
    for path in (stale, fetching, fresh):
        path.write_bytes(b"partial")
    for path in (stale, fetching):
        os.utime(path, (OLD, OLD))
    holder = os.open(locks / f"{'c' * 64}.lock", os.O_RDWR | os.O_CREAT)  # another process fetching c
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert sweep_workspaces(max_age=timedelta(hours=1)) == 2
    finally:
        os.close(holder)

    assert not legacy.exists() and not stale.exists()
    assert fetching.exists() and fresh.exists()


def test_sweep_of_a_cache_never_used_removes_nothing(tmp_path, cache_dir):
    assert sweep_workspaces() == 0
    assert not cache_dir.exists()


def test_the_attempt_lock_is_held_across_threads_of_one_worker(tmp_path, cache_dir):
    """Two workers in one process (tests, `prodline dev`) share a cache: the lock is per open file,
    so the sweep of one sees the other's attempts as live."""
    store = SlowStore(tmp_path / "store")
    ref = bundle(tmp_path, store)
    opened, release = threading.Event(), threading.Event()

    async def hold() -> None:
        async with attempt_workspace(context_for(ref), store) as code:
            assert code is not None
            os.utime(code.parent, (OLD, OLD))
            opened.set()
            await asyncio.to_thread(release.wait)

    holder = threading.Thread(target=lambda: asyncio.run(hold()))
    holder.start()
    try:
        assert opened.wait(10)
        assert sweep_workspaces() == 0
    finally:
        release.set()
        holder.join()
    assert list((cache_dir / "attempts").iterdir()) == []
