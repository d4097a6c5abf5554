"""Child processes: output is captured with secrets masked; cancellation leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from datetime import timedelta

from prodline.activities.process import run_process

from conftest import process_alive, wait_for

# A stand-in for the worker: runs one command through run_process, as a step would.
WORKER = """
import asyncio, os, signal, sys
from prodline.activities.process import run_process
asyncio.run(run_process(sys.argv[1], cwd=os.getcwd(), env=dict(os.environ), cancel_signal=signal.SIGINT))
"""


async def test_output_tail_masks_secrets_and_reports_exit_code(tmp_path):
    result = await run_process(
        "echo connecting with hunter2; echo done >&2; exit 3",
        cwd=str(tmp_path),
        env=dict(os.environ),
        secrets=["hunter2"],
    )
    assert result.exit_code == 3
    assert result.output.splitlines() == ["connecting with ***", "done"]


async def test_cancelling_kills_the_whole_process_group(tmp_path):
    script = "trap '' TERM; sleep 300 & echo $! > child.pid; wait"  # ignores SIGTERM: needs the SIGKILL escalation
    task = asyncio.create_task(
        run_process(script, cwd=str(tmp_path), env=dict(os.environ), grace=timedelta(milliseconds=300))
    )
    pid_file = tmp_path / "child.pid"
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    child = int(pid_file.read_text())
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("run_process swallowed the cancellation")
    await asyncio.sleep(0.1)
    assert not process_alive(child)


async def test_a_huge_line_without_newline_does_not_hang_the_step(tmp_path):
    command = "python3 -c \"import sys; sys.stdout.write('x' * 200000)\"; echo; echo done"
    result = await asyncio.wait_for(run_process(command, cwd=str(tmp_path), env=dict(os.environ)), timeout=20)
    assert result.exit_code == 0
    assert result.output.splitlines()[-1] == "done"


async def test_multi_line_secrets_are_masked_line_by_line(tmp_path):
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END KEY-----"
    result = await run_process(
        "echo 'leaked: MIIEvQIBADANBgkqhkiG9w0B'", cwd=str(tmp_path), env=dict(os.environ), secrets=[key]
    )
    assert "MIIEvQIBADANBgkqhkiG9w0B" not in result.output


def test_a_child_does_not_outlive_its_worker(tmp_path):
    """The worker dies of SIGKILL (OOM killer, `kill -9`): its command gets the cancel signal, as on a
    cancel, and nothing of its process group is left running (a background job ignores SIGINT)."""
    script = (
        "trap 'echo interrupted > stopped; exit 130' INT; sleep 300 & echo $! > child.pid; wait; echo ran-on > stopped"
    )
    worker = subprocess.Popen([sys.executable, "-c", WORKER, script], cwd=tmp_path)
    pid_file = tmp_path / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=10, what="the command to start")
    child = int(pid_file.read_text())
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    try:
        wait_for(lambda: not process_alive(child), timeout=10, what="the orphaned command to be stopped")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # not left behind when this fails
    assert (tmp_path / "stopped").read_text().strip() == "interrupted"
