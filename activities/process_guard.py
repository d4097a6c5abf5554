"""Keep a child process from outliving the worker that started it; the one place that stops it.

:func:`prodline.activities.process.run_process` does not start a tool
directly: it starts this script (``python -I -S process_guard.py FD SIGNAL
GRACE -- ARGV...``) as the leader of a new session, and the script runs the
tool as its child, in that session's process group. The worker keeps the write
end of a pipe whose read end is ``FD``. The guard waits for whichever comes
first:

* the tool exits: the guard exits the same way (same code, or the same signal);
* the pipe reaches EOF: the worker closed it (the activity was cancelled) or
  the kernel did (the worker died, even of SIGKILL). Either way the guard
  stops the whole group as Ctrl-C would: ``SIGNAL`` (SIGINT for Terraform,
  which then writes its state and releases its lock; SIGTERM for scripts),
  again after ``min(2 s, GRACE / 2)`` (tools can miss a signal while they start,
  the embedded Terraform does), SIGKILL once ``GRACE`` is up, and SIGKILL to
  whatever the tool left behind in its group once it is gone.

Why a guard process and not ``prctl(PR_SET_PDEATHSIG)`` in the child: the
death signal reaches only the direct child, not the providers and provisioner
shells Terraform starts (they would run to the end); it fires when the *thread*
that forked exits, not the process; it can send one signal only, so no SIGINT
with a grace period (a SIGKILLed Terraform leaves a remote backend's lock
behind); it needs ``preexec_fn``, which is unsafe in a threaded worker; and it
is Linux-only. The pipe's EOF is delivered by the kernel however the worker
ends, and the guard can signal the whole group because it leads it. The cost
is a Python start without site-packages, about 30 ms of CPU per process here
(``sh -c true`` alone: about 1 ms).

Standard library only, no site-packages (``-S``): it must start fast and
cannot import prodline.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

# The guard is in the group it signals: a handler (not SIG_IGN, which the tool
# would inherit through exec) lets it live through its own SIGINT and SIGTERM.
_SURVIVE = (signal.SIGINT, signal.SIGTERM)


def _ignore(signum: int, frame: object) -> None:
    pass


def _spawn(command: list[str]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: becomes the tool
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"prodline: cannot run {command[0]}: {exc.strerror}\n".encode())
        os._exit(127)  # like sh for a command it cannot run
    return pid


class _Guard:
    def __init__(self, control: int, child: int):
        self.control, self.child = control, child
        # SIGCHLD (and our own signals) wake the select() below; no polling, no threads.
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)

    def wait(self, timeout: float | None, watch_control: bool) -> int | None:
        """The child's exit code (negative: killed by that signal), or None on timeout or stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.child, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            watched = [self.wake_r, self.control] if watch_control else [self.wake_r]
            readable, _, _ = select.select(watched, [], [], remaining)
            if self.wake_r in readable:
                os.read(self.wake_r, 512)
            if self.control in readable and not os.read(self.control, 512):
                return None  # EOF: the worker asked us to stop, or is gone

    def stop(self, first: int, grace: float) -> int:
        """Signal the group, once more soon, SIGKILL after ``grace``; then clear the group."""
        soon = min(2.0, grace / 2)
        code = None
        for sig, wait in ((first, soon), (first, grace - soon), (signal.SIGKILL, 5.0)):
            os.killpg(0, sig)
            code = self.wait(wait, watch_control=False)
            if code is not None:
                break
        # The tool is gone; nothing it started may survive it (this ends the guard too).
        os.killpg(0, signal.SIGKILL)
        return code if code is not None else -signal.SIGKILL


def _exit_like(code: int) -> None:
    """Exit as the child did, so the worker sees its exit code or its signal."""
    if code < 0:
        sig = -code
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        os.kill(os.getpid(), sig)
        code = 128 + sig  # if the signal did not end us
    os._exit(code)


def main(argv: list[str]) -> None:
    control, first, grace, command = int(argv[1]), int(argv[2]), float(argv[3]), argv[5:]
    os.set_inheritable(control, False)  # the tool has no business with it
    if os.getpgrp() != os.getpid():
        os.setsid()  # run_process starts us as a session leader; elsewhere, never signal our caller's group
    for sig in _SURVIVE:
        signal.signal(sig, _ignore)
    # Python ignores SIGPIPE and SIGXFSZ; the tool must start with the defaults.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, _ignore)  # a handler, so that SIGCHLD wakes select()
    guard = _Guard(control, _spawn(command))
    code = guard.wait(None, watch_control=True)
    if code is None:
        code = guard.stop(first, grace)
    _exit_like(code)


if __name__ == "__main__":
    main(sys.argv)
