"""What runs where: each service's lane in each environment, as its ledger keeps it.

The ledger workflow of a service in an environment (``workflows/ledger.py``) owns
its lane: the release holding it, the releases queued behind it, a hold (after a
rollback) and the live deployment. ``prodline env status`` shows them per
environment and service, ``prodline release list --environment E`` lists the
releases running and queued in one environment.

Which environments: the registered application's current revision (never a local
file), in promotion order. Which services: the one asked for, else the ones the
application lists (``services:``), else those released under it (found through
visibility). Lanes are read concurrently, one query per service and environment;
a ledger never written (nothing released there yet) is an empty lane.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError

from prodline.config.errors import ConfigError
from prodline.config.freezes import ScheduledFreeze, freeze_in_force
from prodline.config.loader import load_application_text
from prodline.contracts import DeploymentRecord, DriftReport, Hold, LaneEntry, LaneView, ledger_id
from prodline.errors import InvalidInput, NotFound, Unavailable, WrongState

# A lane query needs a worker on the queue the ledger runs on; without one it would wait for good.
ANSWER_SECONDS = 5.0
# At most this many lane queries in flight (an application may have hundreds of services).
CONCURRENT_READS = 32
# Services found through visibility: the distinct ones among this many newest releases.
DISCOVER_RELEASES = 200


@dataclass(frozen=True)
class Live:
    """The deployment running in an environment: the latest verified one."""

    version: str
    release_id: str
    since: datetime  # when it was verified (the deployment's end)
    approved_by: list[str]
    bundle: str  # digest of the service bundle it deployed
    revision: int  # the application revision it obeyed (0: recorded before revisions)
    kind: str  # release, rollback or heal
    by: str  # who started it (a rollback: who asked for it)

    @classmethod
    def of(cls, record: DeploymentRecord) -> Live:
        return cls(
            version=record.version,
            release_id=record.release_id,
            since=record.finished_at,
            approved_by=list(record.approved_by),
            bundle=record.bundle,
            revision=record.revision,
            kind=record.kind,
            by=record.by,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "release_id": self.release_id,
            "since": self.since.isoformat(),
            "approved_by": self.approved_by,
            "bundle": self.bundle,
            "revision": self.revision,
            "kind": self.kind,
            "by": self.by,
        }


@dataclass(frozen=True)
class EnvironmentLane:
    """One service in one environment: what is live, who holds the lane, who waits, a hold, drift."""

    application: str
    service: str
    environment: str
    live: Live | None = None
    holder: LaneEntry | None = None
    queue: list[LaneEntry] = field(default_factory=list)
    hold: Hold | None = None
    drift: DriftReport | None = None
    frozen: str = ""  # why releases entering it wait now, if it is frozen

    @classmethod
    def of(cls, application: str, service: str, environment: str, view: LaneView, frozen: str = "") -> EnvironmentLane:
        return cls(
            application,
            service,
            environment,
            live=Live.of(view.live) if view.live is not None else None,
            holder=view.holder,
            queue=list(view.queue),
            hold=view.hold,
            drift=view.drift,
            frozen=frozen,
        )

    @property
    def needs_attention(self) -> bool:
        """A rollback failed here: the lane is held until someone acts."""
        return self.hold is not None and self.hold.kind == "attention"

    @property
    def empty(self) -> bool:
        """Nothing was ever deployed here and nothing waits."""
        return self.live is None and self.holder is None and not self.queue and self.hold is None

    def as_json(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "service": self.service,
            "environment": self.environment,
            "live": self.live.as_json() if self.live else None,
            "holder": self.holder.model_dump(mode="json") if self.holder else None,
            "queue": [entry.model_dump(mode="json") for entry in self.queue],
            "hold": self.hold.model_dump(mode="json") if self.hold else None,
            "drift": self.drift.model_dump(mode="json") if self.drift else None,
            "needs_attention": self.needs_attention,
            "frozen": self.frozen,
        }


class LaneRelease(NamedTuple):
    """A release in an environment's lane (``release list --environment``)."""

    release_id: str
    place: Literal["running", "queued"]
    version: str
    kind: str


@dataclass(frozen=True)
class Lanes:
    """Which lanes an application has: its services and its environments, in promotion order."""

    services: list[str]
    environments: list[str]
    revision: int
    scheduled_freezes: dict[str, list[ScheduledFreeze]] = field(default_factory=dict)  # per environment


async def lanes_of(
    client: Client, application: str, service: str | None = None, environment: str | None = None
) -> Lanes:
    """The services and environments whose lanes to read, from the registered current revision.

    ``service`` and ``environment`` narrow them; each must be one the application has (a
    service only where the application lists its services).
    """
    from .applications import ApplicationClient

    # Reads only: the application workflow answers on its own task queue, whatever this one is.
    revision = await ApplicationClient(client, "").current(application)
    if revision is None:
        raise NotFound(
            f"application {application!r} is not registered (register it with `prodline app apply prodline.yaml`)"
        )
    try:
        app, _ = load_application_text(revision.source, revision.path or "prodline.yaml")
    except ConfigError as exc:  # valid when applied, refused by this prodline's models
        raise WrongState(
            f"revision {revision.number} of {application} cannot be read by this prodline (is it older than the "
            f"workers?):\n{exc}"
        ) from None
    environments = [env.name for env in app.environments]
    if environment is not None:
        if environment not in environments:
            raise InvalidInput(
                f"{application} has no environment {environment!r} (its environments: {', '.join(environments)})"
            )
        environments = [environment]
    listed = list(app.services or [])
    if service is not None:
        if listed and service not in listed:
            raise InvalidInput(
                f"{service!r} is not one of {application}'s services (revision {revision.number} lists: "
                f"{', '.join(listed)})"
            )
        services = [service]
    else:
        services = listed or await released_services(client, application)
    scheduled = {env.name: list(env.freezes) for env in app.environments if env.name in environments}
    return Lanes(services, environments, revision.number, scheduled)


async def released_services(client: Client, application: str, limit: int = DISCOVER_RELEASES) -> list[str]:
    """The services released under ``application`` (among its ``limit`` newest releases), sorted."""
    from . import listing

    rows = await listing.newest(client, listing.visibility_query(application=application), limit)
    return sorted({row.service for row in rows if row.service})


async def environment_status(
    client: Client, application: str, services: list[str], environments: list[str], frozen: dict[str, str] | None = None
) -> list[EnvironmentLane]:
    """Every service's lane in every environment: environments in the order given, then services
    (``frozen``: environment -> why it is frozen, from :func:`freezes_now`)."""
    slots = asyncio.Semaphore(CONCURRENT_READS)

    async def one(service: str, environment: str) -> EnvironmentLane:
        async with slots:
            view = await _read_lane(client, application, service, environment)
        return EnvironmentLane.of(application, service, environment, view, (frozen or {}).get(environment, ""))

    return list(await asyncio.gather(*(one(s, e) for e in environments for s in services)))


async def freezes_now(client: Client, application: str, lanes: Lanes, now: datetime) -> dict[str, str]:
    """Environment -> why it is frozen at ``now``, as a release entering it would be told."""
    from prodline.activities.rules.freeze import read_manual_freezes

    kept = await read_manual_freezes(client, application)
    found = {env: freeze_in_force(env, kept, lanes.scheduled_freezes.get(env, []), now) for env in lanes.environments}
    return {env: frozen[0] for env, frozen in found.items() if frozen is not None}


async def lane_releases(
    client: Client, application: str, environment: str, service: str | None = None
) -> list[LaneRelease]:
    """The releases running and queued in ``environment``: per service, the holder, then its queue in turn order."""
    lanes = await lanes_of(client, application, service, environment)
    found: list[LaneRelease] = []
    for lane in await environment_status(client, application, lanes.services, lanes.environments):
        if lane.holder is not None:
            found.append(LaneRelease(lane.holder.release_id, "running", lane.holder.version, lane.holder.kind))
        found += [LaneRelease(e.release_id, "queued", e.version, e.kind) for e in lane.queue]
    return found


async def _read_lane(client: Client, application: str, service: str, environment: str) -> LaneView:
    from prodline.activities.ledger import read_lane  # temporalio.activity: lanes only

    ledger = ledger_id(application, service, environment)
    try:
        return await asyncio.wait_for(read_lane(client, application, service, environment), ANSWER_SECONDS)
    except TimeoutError:
        raise Unavailable(
            f"no worker answered for {ledger} within {ANSWER_SECONDS:g}s: its lane is read by the workers of "
            "the task queue its releases run on (start `prodline dev` or `prodline worker`)"
        ) from None
    except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
        raise Unavailable(f"{ledger} could not answer: {exc}") from None
