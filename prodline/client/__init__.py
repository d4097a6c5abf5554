"""Start, follow, steer and read releases: what the CLI, the tests and the benchmarks use.

* :mod:`.releases` -- :class:`ReleaseClient`: start or attach, outcome and status, watch,
  cancel, decide, list, ledgers
* :mod:`.history` -- the status of a release that has ended, with no worker to ask
* :mod:`.listing` -- visibility queries, newest start first
* :mod:`.workers` -- whether a worker takes a release's work
* :mod:`.setup` -- the search attributes a namespace needs (``prodline setup``)

The names below are imported on first use (PEP 562): every CLI command starts by
importing this package, and most need only :class:`ReleaseClient`, so none pays for
the modules it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .listing import ListedRelease
    from .releases import DecisionTarget, Outcome, Progress, ReleaseClient, Started, View
    from .setup import NotSetUp, Setup

# Each public name and the module (of this package) that defines it.
_MODULE_OF = {
    "DecisionTarget": "releases",
    "ListedRelease": "listing",
    "NotSetUp": "setup",
    "Outcome": "releases",
    "Progress": "releases",
    "ReleaseClient": "releases",
    "Setup": "setup",
    "Started": "releases",
    "View": "releases",
}

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


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        # Submodules (``from prodline.client import workers``) are found by the import system after this.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
