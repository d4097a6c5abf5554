"""Exit codes of the ``prodline`` CLI, documented in the README; CI scripts rely on them."""

SUCCEEDED = 0
FAILED = 1  # the release failed (a step or check failed), or an unexpected error
INVALID = 2  # bad config, bad parameters or bad command-line usage
REJECTED = 3  # an approver rejected the release
CANCELLED = 4  # the release was cancelled
TIMED_OUT = 5  # the release (or a wait inside it, such as an approval) timed out
UNAVAILABLE = 6  # Temporal could not be reached
NOT_FOUND = 7  # no release with that ID
WRONG_STATE = 8  # the release is not in a state that allows this (e.g. cancelling a finished release)
INTERRUPTED = 130  # Ctrl-C

BY_STATE = {
    "succeeded": SUCCEEDED,
    "failed": FAILED,
    "rejected": REJECTED,
    "cancelled": CANCELLED,
    "timed_out": TIMED_OUT,
}
