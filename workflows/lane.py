"""The release's side of the lanes: one release of a service per environment at a time.

Before it plans anything in an environment, the release asks that
environment's ledger (``workflows/ledger.py``) for its turn and waits for the
answer, durably: a timer-free wait on a signal. While it waits, its status
says for whom: the release right ahead of it ("waiting for shop.checkout@1.4.2
to leave production"), or the hold ("held at 2.0.0 ..."). The answer is one of:

* its turn, with what runs there now (which lets the release refuse to put an
  older version over a newer one, and is what an automatic rollback restores);
* superseded by a newer version (the release ends ``superseded``).

It leaves the lane when its deployment there is recorded (the ledger frees it
on that record) or, if it stops before deploying, with an explicit ``leave``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from prodline.config.release import EnvironmentRun, ReleaseRequest
    from prodline.config.versions import is_older
    from prodline.contracts import (
        LANE_REQUEST,
        DeploymentKind,
        DeploymentRecord,
        Hold,
        LaneEntry,
        LaneRequest,
        LaneTurn,
        ReleaseState,
    )

    from .outcomes import ReleaseStopped
    from .status import StatusBoard


def held_message(environment: str, application: str, service: str, hold: Hold) -> str:
    return (
        f"{environment} is held at {hold.version} by {hold.by} since {hold.at:%Y-%m-%d %H:%M}Z: {hold.reason}; "
        f"`prodline unhold {service} --environment {environment} --application {application}` lets releases in again"
    )


class Lanes:
    """The lanes one release enters, environment by environment."""

    def __init__(self, request: ReleaseRequest, board: StatusBoard):
        self._request = request
        self._board = board
        self._turns: dict[str, LaneTurn] = {}
        self._entered: set[str] = set()
        self.holding = ""  # the environment whose lane this release holds now
        self.used = False  # a release started before lanes existed replays without them
        self.superseded_is_final = False  # older releases let a late "waiting" answer replace it

    def told(self, turn: LaneTurn) -> None:
        """The ledger's answer (the ``turn`` signal)."""
        if turn.environment not in self._entered:
            return
        current = self._turns.get(turn.environment)
        if current is not None and 0 < turn.number < current.number:
            return  # sent before the answer it has: signals between workflows may arrive out of order
        if current is not None and current.granted and not turn.granted:
            return  # a late "waiting" answer, overtaken by the grant
        if self.superseded_is_final and current is not None and current.superseded_by and not turn.granted:
            return  # the same for being superseded: the ledger has dropped it, nothing else comes
        self._turns[turn.environment] = turn

    def expect(self, environment: str) -> None:
        """Answers for the environment count from now on (the release is asking for its turn there)."""
        self._entered.add(environment)
        self._turns.pop(environment, None)

    def answer(self, environment: str) -> LaneTurn | None:
        """The ledger's answer that stands for the environment (None before the first)."""
        return self._turns.get(environment)

    def live(self, environment: str) -> DeploymentRecord | None:
        """What ran in the environment when this release got its turn there."""
        turn = self._turns.get(environment)
        return turn.live if turn is not None else None

    async def enter(self, stage: EnvironmentRun, kind: DeploymentKind) -> LaneTurn:
        r = self._request
        entry = LaneEntry(
            release_id=r.release_id,
            run_id=workflow.info().run_id,
            version=r.version,
            requested_at=workflow.now(),
            kind=kind,
            by=self._board.status.initiator,
            supersede=stage.supersede,
        )
        self.expect(stage.name)
        await self._send(stage.name, LaneRequest(**self._where(stage.name), action="enter", entry=entry))
        shown: list[LaneTurn | None] = [None]  # the answer on display (a list: the condition reads it)
        while True:
            await workflow.wait_condition(lambda: self.answer(stage.name) not in (None, shown[0]))
            turn = self._turns[stage.name]
            if turn.granted:
                self.holding = stage.name
                self._board.wait(stage.name, "")
                refusal = self._downgrade(stage, turn, kind)
                if refusal:
                    await self.leave(stage.name)  # nothing was deployed: nothing to record
                    raise ReleaseStopped(ReleaseState.failed, refusal)
                return turn
            if turn.superseded_by:
                self._entered.discard(stage.name)
                raise ReleaseStopped(
                    ReleaseState.superseded, f"superseded by {turn.superseded_by} while waiting for {stage.name}"
                )
            shown[0] = turn
            if turn.held is not None:
                self._board.wait(stage.name, held_message(stage.name, r.application, r.service, turn.held))
            else:  # the one ahead holds the lane, or is queued before this one: it leaves first either way
                self._board.wait(stage.name, f"waiting for {turn.ahead or 'the release ahead'} to leave {stage.name}")

    def _downgrade(self, stage: EnvironmentRun, turn: LaneTurn, kind: DeploymentKind) -> str:
        """Why this release may not deploy over what is live ("" if it may)."""
        live, version = turn.live, self._request.version
        if kind == "heal" and (live is None or live.version != version):
            # Healing puts back what is live; what was live when the drift was found may not be any more.
            now = f"{live.version} is live there now" if live else "nothing is live there now"
            return f"nothing to heal: {version} was live in {stage.name} when the drift was found; {now}"
        if kind != "release" or live is None or stage.allow_downgrade or not is_older(version, live.version):
            return ""
        return (
            f"{version} is older than {live.version}, live in {stage.name} since {live.finished_at:%Y-%m-%d %H:%M}Z: "
            f"a release never overwrites a newer version; to go back use `prodline rollback {self._request.service} "
            f"--environment {stage.name} --to {version} --reason ...` (or set `releases.allow_downgrade`)"
        )

    def recorded(self, environment: str) -> None:
        """Its deployment there was recorded: the ledger freed the lane on that record."""
        self._entered.discard(environment)
        if self.holding == environment:
            self.holding = ""

    async def leave(self, environment: str) -> None:
        """Leave the queue, or the lane, without a deployment to record."""
        if environment not in self._entered:
            return
        self.recorded(environment)
        r = self._request
        entry = LaneEntry(
            release_id=r.release_id, run_id=workflow.info().run_id, version=r.version, requested_at=workflow.now()
        )
        await self._send(environment, LaneRequest(**self._where(environment), action="leave", entry=entry))

    def _where(self, environment: str) -> dict[str, str]:
        return {"application": self._request.application, "service": self._request.service, "environment": environment}

    async def _send(self, environment: str, request: LaneRequest) -> None:
        # A local activity, as the ledger record is: one marker event, no task round trip.
        await workflow.execute_local_activity(
            LANE_REQUEST,
            request,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
            summary=f"{request.action} the lane of {environment}",
        )
