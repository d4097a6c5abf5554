"""Start, follow, steer and read releases: what the CLI, the tests and the benchmarks use.

* :mod:`.releases` -- :class:`ReleaseClient`: start or attach, outcome and status, watch,
  cancel, decide, list, ledgers
* :mod:`.history` -- the status of a release that has ended, with no worker to ask
* :mod:`.listing` -- visibility queries, newest start first
* :mod:`.workers` -- whether a worker takes a release's work
* :mod:`.setup` -- the search attributes a namespace needs (``prodline setup``)
"""

from .listing import ListedRelease
from .releases import DecisionTarget, Outcome, Progress, ReleaseClient, Started, View
from .setup import NotSetUp, Setup

__all__ = [
    "DecisionTarget",
    "ListedRelease",
    "NotSetUp",
    "Outcome",
    "Progress",
    "ReleaseClient",
    "Setup",
    "Started",
    "View",
]
