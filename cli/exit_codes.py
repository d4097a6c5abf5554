"""Exit codes of the ``prodline`` CLI, documented in the README; CI scripts rely on them.

The constants live with the error base (:mod:`prodline.errors`), where every
error type names its code; this module adds what a release's end maps to.
"""

from prodline.errors import (
    CANCELLED,
    FAILED,
    INTERRUPTED,
    INVALID,
    NOT_FOUND,
    REJECTED,
    ROLLED_BACK,
    SUCCEEDED,
    SUPERSEDED,
    TIMED_OUT,
    UNAVAILABLE,
    WRONG_STATE,
)

# Output closed by its reader (`prodline schema | head`): what a Unix tool killed by SIGPIPE exits with.
BROKEN_PIPE = 141

BY_STATE = {
    "succeeded": SUCCEEDED,
    "failed": FAILED,
    "rejected": REJECTED,
    "cancelled": CANCELLED,
    "timed_out": TIMED_OUT,
    "rolled_back": ROLLED_BACK,
    "rollback_failed": ROLLED_BACK,
    "superseded": SUPERSEDED,
}

__all__ = [
    "BROKEN_PIPE",
    "BY_STATE",
    "CANCELLED",
    "FAILED",
    "INTERRUPTED",
    "INVALID",
    "NOT_FOUND",
    "REJECTED",
    "ROLLED_BACK",
    "SUCCEEDED",
    "SUPERSEDED",
    "TIMED_OUT",
    "UNAVAILABLE",
    "WRONG_STATE",
]
