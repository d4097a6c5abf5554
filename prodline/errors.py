"""The one error base of prodline, and what each kind of error means for the CLI.

Every layer raises subclasses of :class:`ProdlineError`; the CLI turns one into
its message and exit code by its type (``exit_code``), never by class name.
The codes are documented in the README; CI scripts rely on them.
"""

from __future__ import annotations

SUCCEEDED = 0
FAILED = 1  # the release failed (a step or check failed), or an unexpected error
INVALID = 2  # bad config, bad parameters or bad command-line usage
REJECTED = 3  # an approver rejected the release
CANCELLED = 4  # the release was cancelled
TIMED_OUT = 5  # the release (or a wait inside it, such as an approval) timed out
UNAVAILABLE = 6  # Temporal could not be reached
NOT_FOUND = 7  # no release with that ID
WRONG_STATE = 8  # the release is not in a state that allows this (e.g. cancelling a finished release)
ROLLED_BACK = 9  # the release failed and the version verified before was restored (or it failed to restore)
SUPERSEDED = 10  # a newer version took the release's place while it waited for an environment
INTERRUPTED = 130  # Ctrl-C: the CLI stopped following; the release goes on


class ProdlineError(Exception):
    """An error with a message meant for a person and the exit code it maps to."""

    exit_code: int = FAILED

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InvalidInput(ProdlineError):
    """Bad config, parameters or usage: nothing was started."""

    exit_code = INVALID


class Unavailable(ProdlineError):
    """Temporal (or another service prodline needs) cannot be reached."""

    exit_code = UNAVAILABLE


class NotFound(ProdlineError):
    exit_code = NOT_FOUND


class WrongState(ProdlineError):
    exit_code = WRONG_STATE
