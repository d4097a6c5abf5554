"""Driving a canary pause by pause, with the environment's rules at every pause.

A step whose spec ``drives_pauses`` (an Argo Rollouts canary) is applied like
any step; then this module takes over, in the release workflow::

    wait (activity) -> paused at pause N -> the rules the step names for pause N
    (checks, a `for` watch, an approval) -> promote exactly that pause (activity)
    -> wait ... -> Healthy and fully promoted: deployed, latched for this release

The wait and promote activities live with the step's runner; promote refuses
unless the canary is still paused at the step and pod hash the wait saw, so a
step still running is never skipped. Whatever stops the release while a canary
is in flight (a failed rule, a rejection, a timeout, a cancel) aborts it first:
traffic goes back to the stable version, and no Rollout is left paused and
forgotten.

An operator acts through the release, not behind its back: ``prodline release
promote|abort`` sends the ``rollout`` Update, recorded in history with who and
why. ``promote`` skips what is left of the open pause's checks, ``promote
--full`` skips every remaining step, ``abort`` aborts and fails the release.
A promote never skips people: one that would pass a pause waiting for the
environment's approval is refused (approve it instead).

Everything here is workflow code: deterministic, no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from prodline.config.release import EnvironmentRun
    from prodline.config.rules import ApprovalRule, Check, Lifecycle
    from prodline.config.steps import CanaryPause, RolloutStep, Step
    from prodline.contracts import (
        ABORT_STEP,
        PROMOTE_STEP,
        WAIT_STEP,
        ReleaseState,
        RolloutCommand,
        StepAction,
        StepProgress,
        StepRun,
    )

    from .gates import Gates
    from .outcomes import ReleaseStopped
    from .status import StatusBoard

T = TypeVar("T")

# Calls one of the step's activities: (activity, input, summary, cleanup) -> its StepProgress.
# A cleanup call runs even in a release being cancelled (aborting the canary is why it stops).
StepCall = Callable[[str, StepRun | StepAction, str, bool], Awaitable[StepProgress]]


def pause_checks(stage: EnvironmentRun, rules: CanaryPause) -> list[Check]:
    """The environment's checks a pause runs: the ones it names (labels the environment does not
    have are skipped there), or, when it names none, those that run after deploying."""
    if rules.checks is None:
        return [c for c in stage.checks if Lifecycle.after_deploy in c.when]
    return [c for c in stage.checks if c.label in rules.checks]


def pause_approval(stage: EnvironmentRun) -> ApprovalRule | None:
    """The environment's approval, asked for again at a pause that says `approval: true`."""
    return next((p.approval for p in stage.preconditions if p.approval is not None), None)


class Canary:
    """One canary step being driven; the operator's commands go to it while it is."""

    def __init__(
        self,
        stage: EnvironmentRun,
        step: Step,
        run: StepRun,
        board: StatusBoard,
        gates: Gates,
        call: StepCall,
    ):
        self.stage, self.step, self.run = stage, step, run
        self._board, self._gates, self._call = board, gates, call
        self.progress = StepProgress(message="on its way to the first pause")
        self.command: RolloutCommand | None = None
        self.handled = ""  # what was done about the last command: its Update's answer
        self._reached = 0  # the last pause the canary stopped at
        self.closed = ""  # why commands are no longer taken, once the canary is done with

    @property
    def spec(self) -> RolloutStep:
        spec = self.step.spec
        assert isinstance(spec, RolloutStep)
        return spec

    def refusal(self, command: RolloutCommand) -> str:
        """Why this command cannot be taken now ("" when it can)."""
        if command.action == "abort":
            return ""  # stopping is always allowed (it waits for a promote in flight)
        if self.command is not None:
            return f"{self.command.by}'s {self.command.action.replace('_', ' ')} is still being carried out"
        if command.action == "promote" and not self.progress.paused:
            return (
                f"the canary is not paused ({self.progress.message or 'progressing'}); a step still running "
                "is never skipped: wait for the next pause, or promote --full"
            )
        skipped = self._approvals_skipped(full=command.action == "promote_full")
        if skipped:
            # An operator's promote skips checks, never people: the approval rule names who decides.
            return (
                f"pause {skipped[0]} waits for {self.stage.name}'s approval, which a promote would skip; "
                "approve it with `prodline approve` (or abort)"
            )
        return ""

    def _approvals_skipped(self, full: bool) -> list[int]:
        """The pauses with an approval that a promote now would skip (1-based)."""
        if pause_approval(self.stage) is None:
            return []
        first = self.progress.pause if self.progress.paused else self._reached + 1
        last = len(self.spec.pauses) if full else first
        return [n for n in range(first, last + 1) if self.spec.pause_rules(n).approval]

    async def take(self, command: RolloutCommand) -> str:
        """An operator's command (the rollout Update's handler): carried out by :meth:`drive`,
        one at a time; the answer says what was done."""
        while self.command is not None:  # an abort waits for a promote in flight
            await workflow.wait_condition(lambda: self.command is None)
        if self.closed:
            return self.closed
        self.command = command
        await workflow.wait_condition(lambda: self.command is None)
        return self.handled

    def close(self, why: str) -> None:
        """No more commands: answer one that arrived as the canary ended, with nothing done."""
        self.closed = why
        if self.command is not None:
            self.handled, self.command = why, None

    async def drive(self) -> StepProgress:
        """Until Healthy and fully promoted; aborts the canary on any way out but success."""
        try:
            while True:
                progress = await self._unless_commanded(self._call(WAIT_STEP, self.run, self._label("wait"), False))
                if progress is None:
                    await self._obey()
                    continue
                self.progress = progress
                if progress.done:
                    break
                await self._at_pause(progress)
        except ReleaseStopped as stop:
            raise await self.stopped(stop) from None
        except asyncio.CancelledError:
            await self.abort("the release was cancelled")
            raise
        # Latched: the environment counts as deployed for this release, whatever flaps later.
        self._event(f"{self.step.name}: canary healthy and fully promoted")
        return self.progress

    async def _at_pause(self, progress: StepProgress) -> None:
        self._reached = max(self._reached, progress.pause)
        where = f"canary pause {progress.pause} (step {progress.step_index + 1} of {progress.steps})"
        self._board.step(self.stage.name, self.step.name).summary = f"paused at {where}"
        self._event(f"{self.step.name}: paused at {where}")
        if await self._unless_commanded(self._pause_rules(progress.pause, where)) is None:
            await self._obey()  # the operator decided instead of the rules
            return
        self.progress = await self._call(PROMOTE_STEP, self._action(progress), self._label(f"promote {where}"), False)
        self._event(f"{self.step.name}: promoted past {where}")

    async def _pause_rules(self, pause: int, where: str) -> bool:
        rules = self.spec.pause_rules(pause)
        # An evaluation does not heartbeat, so it may finish despite the cancel a command sends:
        # the gates then stop at once instead of going on to the pause's next rule.
        self._gates.interrupted = lambda: self.command is not None
        try:
            await self._run_pause_rules(rules, where)
        finally:
            self._gates.interrupted = _never
        return True

    async def _run_pause_rules(self, rules: CanaryPause, where: str) -> None:
        for check in pause_checks(self.stage, rules):
            label = f"check {check.label} at {where}"
            if rules.watch_for:
                await self._gates.watch(self.stage, check.model_copy(update={"watch_for": rules.watch_for}), label)
            else:
                await self._gates.hold(self.stage, check, check.failure_behaviour(Lifecycle.after_deploy), label)
        approval = pause_approval(self.stage) if rules.approval else None
        if approval is not None:
            await self._gates.wait_for_people(
                self.stage, self._gates.gate(self.stage, f"approval at {where}", approval)
            )

    async def _unless_commanded(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None when an operator's command arrived first (``work`` is cancelled)."""
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        try:
            await workflow.wait_condition(lambda: task.done() or self.command is not None)
        finally:
            if not task.done():
                task.cancel()
                # Wait for the activity to be really cancelled before acting on the canary.
                await asyncio.gather(task, return_exceptions=True)
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            raise error  # a failed rule stops the release, command or not
        # A command that arrived as the work finished is still carried out (never left hanging).
        return None if self.command is not None else task.result()

    async def _obey(self) -> None:
        """Carry out the operator's command (abort ends the release)."""
        command = self.command
        assert command is not None
        why = f" ({command.reason})" if command.reason else ""
        try:
            if command.action == "abort":
                self.handled = "aborting the canary; the release fails"
                raise ReleaseStopped(
                    ReleaseState.failed, f"{self.stage.name}: canary {self.step.name} aborted by {command.by}{why}"
                )
            full = command.action == "promote_full"
            at = None if full else self.progress
            self._event(f"{command.by}: {command.action.replace('_', ' ')}{why}; the pause's remaining rules skipped")
            label = self._label("promote --full" if full else "promote")
            self.progress = await self._call(PROMOTE_STEP, self._action(at, full=full), label, False)
            self.handled = f"promoted past pause {at.pause}" if at else "promoted to the end"
        finally:
            self.command = None

    async def stopped(self, stop: ReleaseStopped) -> ReleaseStopped:
        """Abort because the release stops; the stop to raise, saying so if the abort failed
        (in the release's reason, not only in an event: someone must act)."""
        failed = await self.abort(stop.reason)
        return ReleaseStopped(stop.state, f"{stop.reason}; {failed}") if failed else stop

    async def abort(self, reason: str) -> str:
        """Send the traffic back to stable; "" when done, else what failed (also said loudly).
        Also after a failed or cancelled apply: the runner finds the Rollout from the plan, and
        one that was never created, or that carries no canary, is left as it is."""
        try:
            done = await self._call(ABORT_STEP, self._action(None, reason=reason), self._label("abort"), True)
            nothing = done.message.startswith("no ")  # the runner found nothing to abort
            what = done.message if nothing else "canary aborted, traffic back on the stable version"
            self._event(f"{self.step.name}: {what}: {reason}")
            return ""
        except (ReleaseStopped, asyncio.CancelledError) as exc:
            why = exc.reason if isinstance(exc, ReleaseStopped) else "cancelled"
            failed = f"THE CANARY OF {self.step.name} COULD NOT BE ABORTED ({why}): abort it by hand"
            self._event(failed)
            return failed

    def _action(self, at: StepProgress | None, *, full: bool = False, reason: str = "") -> StepAction:
        return StepAction(run=self.run, at=at, full=full, reason=reason)

    def _label(self, what: str) -> str:
        return f"{self.stage.name}: {self.step.name} {what}"

    def _event(self, message: str) -> None:
        self._board.event(message, self.stage.name)


def _never() -> bool:
    return False
