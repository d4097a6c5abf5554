"""prodline: production orchestration on Temporal.

Every release is a durable workflow that promotes one service version through
an application's environments, enforcing the rules written in its config.

The package is the design card's top-level folders, one layer each; a layer
imports only from the layers listed before it (``.importlinter`` enforces it):

* :mod:`prodline.errors` -- the error base every layer raises from (exit codes)
* :mod:`prodline.config` -- the two config files as pydantic models, loading and resolving
* :mod:`prodline.contracts` -- names and payloads that cross Temporal history
* :mod:`prodline.activities` -- everything that touches the world (steps, rules, ledger)
* :mod:`prodline.workflows` -- deterministic orchestration, no I/O
* :mod:`prodline.workers` -- processes: the worker, the dev server, logs, connecting
* :mod:`prodline.client` -- start, follow, decide and read releases (CLI, tests, bench)
* :mod:`prodline.cli` -- the ``prodline`` command
"""

__version__ = "0.3.0"
