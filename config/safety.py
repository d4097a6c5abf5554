"""Release safety settings: lanes, rollbacks and drift, per environment and per service.

The platform team says in the application file what may happen in each
environment (whether failures roll back by themselves, which rules a manual
rollback may skip, how often drift is looked for and whether it is healed); a
service can choose, per environment, whether it rolls back automatically and
whether a newer version supersedes older ones still waiting for their turn.

.. code-block:: yaml

    environments:
      - name: production
        rollback: {automatic: true, bypass: [approvals, soak]}
        drift: {every: 10m, self_heal: false}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Model
from .durations import PositiveDuration

# Rules a manual rollback may skip where the application allows it:
# approvals, the soak of `stable` rules, `stable` rules altogether (ordering), freezes.
Bypassable = Literal["approvals", "soak", "ordering", "freezes"]


class RollbackPolicy(Model):
    """The platform's word on rollbacks in one environment."""

    automatic: bool = Field(
        default=False,
        description="A failed step or after-deploy check re-deploys the version verified here before "
        "(its recorded bundle, parameters and steps); a service can turn it on or off for itself.",
    )
    bypass: list[Bypassable] = Field(
        default_factory=list,
        description="Rules `prodline rollback` skips here: approvals, soak, ordering (stable rules), freezes. "
        "What was skipped is recorded with who and why.",
    )


class DriftPolicy(Model):
    """Looking for drift of the verified deployment: a Temporal Schedule runs each step's fetch."""

    every: PositiveDuration | None = Field(
        default=None, description="How often to compare what runs with what was verified (e.g. 10m); unset: never."
    )
    self_heal: bool = Field(
        default=False,
        description="Correct drift with a release of the verified version (kind `heal`: same lane, same rules); "
        "false only reports it. A held environment is reported, never healed.",
    )


class ServiceRollback(Model):
    """A service's own choice, overriding the application's `rollback.automatic` where set."""

    automatic: bool | None = Field(default=None, description="Unset: as the application says.")


class ReleasePolicy(Model):
    """How a service's releases share an environment."""

    supersede: bool = Field(
        default=False,
        description="A newer version waiting for an environment ends older ones waiting there (`superseded`); "
        "a version never skips an environment it was not verified in.",
    )
    allow_downgrade: bool = Field(
        default=False,
        description="Let a release deploy a version older than the one live (otherwise: `prodline rollback`).",
    )
