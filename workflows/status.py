"""Status bookkeeping: what the status query, the search attributes and the UI show.

The release keeps one :class:`~prodline.contracts.ReleaseStatus` and changes it
only through a :class:`StatusBoard`, which keeps the three views in step: the
status (query and result), the ``ProdlineState``/``ProdlineEnvironment``
search attributes, and the live Markdown details in the Temporal UI. Every
event is also a log line (``workflow.logger``, skipped on replay).
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from prodline.contracts import EnvironmentStatus, Event, Phase, ReleaseState, ReleaseStatus, StepStatus

    from . import search_attributes as sa

_ICONS = {
    Phase.pending: "⏳",
    Phase.running: "🔄",
    Phase.waiting: "⏸",
    Phase.succeeded: "✅",
    Phase.failed: "❌",
    Phase.rejected: "⛔",
    Phase.timed_out: "⌛",
    Phase.cancelled: "🚫",
    Phase.skipped: "➖",
    Phase.rolled_back: "↩",
}


def markdown(status: ReleaseStatus) -> str:
    """Live details for the Temporal UI."""
    lines = [f"**{status.service} {status.version}**: {status.state.value}"]
    if status.revision:
        lines.append(f"\n{status.application} revision {status.revision}, bundle `{status.bundle[:19]}`")
    if status.reason:
        lines.append(f"\n> {status.reason}")
    for env in status.environments:
        waiting = f" (waiting on {env.waiting_on})" if env.waiting_on else ""
        queue = f" on `{env.task_queue}`" if env.task_queue else ""
        lines.append(f"\n{_ICONS[env.phase]} **{env.name}**{queue}: {env.phase.value}{waiting}")
        lines += [f"- {_ICONS[s.phase]} {s.name} ({s.kind}) {s.summary}".rstrip() for s in env.steps]
    return "\n".join(lines)


class StatusBoard:
    def __init__(self, status: ReleaseStatus):
        self.status = status

    def environment(self, name: str) -> EnvironmentStatus:
        return self.status.environment(name)

    def step(self, environment: str, step: str) -> StepStatus:
        return next(s for s in self.environment(environment).steps if s.name == step)

    def event(self, message: str, environment: str = "") -> None:
        self.status.events.append(Event(at=workflow.now(), environment=environment, message=message))
        workflow.set_current_details(markdown(self.status))
        workflow.logger.info(message, extra={"release": self.status.release_id, "environment": environment})

    def wait(self, environment: str, what: str) -> None:
        """Show what the environment waits on ("" when it moves again)."""
        env = self.environment(environment)
        if what and what != env.waiting_on:
            self.event(f"waiting: {what}", env.name)
        env.waiting_on = what
        env.phase = Phase.waiting if what else Phase.running
        self.set_state(ReleaseState.waiting if what else ReleaseState.running)

    def set_state(self, state: ReleaseState) -> None:
        if self.status.state is not state:
            self.status.state = state
            workflow.upsert_search_attributes([sa.STATE.value_set(state.value)])
        workflow.set_current_details(markdown(self.status))

    def where(self) -> str:
        """Where the release is, for a decision that arrives with no gate open."""
        if self.status.state.final:
            return self.status.state.value
        running = [e for e in self.status.environments if e.phase in (Phase.running, Phase.waiting)]
        return f"not waiting for a decision ({f'deploying {running[0].name}' if running else 'between environments'})"
