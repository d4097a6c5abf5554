"""How releases read on a terminal: progress lines, summaries, plans for approvers, lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prodline.client import ListedRelease
from prodline.contracts import EnvironmentStatus, Event, Phase, ReleaseState, ReleaseStatus, Verdict


def document(status: ReleaseStatus | None, state: ReleaseState, reason: str, link: str | None) -> dict[str, Any]:
    """What `--json` prints about a release: one shape for `status` and `start --wait`."""
    data = status.model_dump(mode="json") if status else {}
    data.update(state=state.value, reason=reason or data.get("reason", ""), ui_url=link)
    return data


def progress(events: Iterable[Event]) -> list[str]:
    """Events as `--wait` streams them: time, environment, message (continued lines indented)."""
    lines = []
    for event in events:
        where = f"{event.environment:<12}" if event.environment else " " * 12
        first, *rest = event.message.splitlines() or [""]
        lines.append(f"{event.at:%H:%M:%S}  {where} {first}")
        lines += [f"{'':>22}{line}" for line in rest]
    return lines


def plans(env: EnvironmentStatus, indent: str) -> list[str]:
    """What would be applied in ``env``, for whoever is asked to approve it."""
    lines = []
    for step in env.steps:
        if step.plan:
            lines.append(f"{indent}plan of {step.name}" + (f": {step.summary}" if step.summary else ":"))
            lines += [f"{indent}  {line}" for line in step.plan.splitlines()]
    return lines


def summary(release_id: str, state: ReleaseState, reason: str, status: ReleaseStatus | None, link: str | None) -> str:
    lines = [""]
    for env in status.environments if status else []:
        steps = "  ".join(f"{s.name}:{s.phase.value}" for s in env.steps)
        waiting = f"  (waiting on {env.waiting_on})" if env.waiting_on else ""
        # Where it runs, when not with the workflow: whoever reads "waiting" must know whose worker to check.
        runs_on = f"  on task queue {env.task_queue!r}" if env.task_queue else ""
        lines.append(f"  {env.name:<12} {env.phase.value:<10} {steps}{runs_on}{waiting}")
        if env.phase is Phase.waiting:
            lines += plans(env, indent="    ")
    lines.append(f"release {release_id} {state.value}" + (f": {reason}" if reason else ""))
    if link:
        lines.append(f"  {link}")
    return "\n".join(lines)


def details(status: ReleaseStatus, events: int = 10, output_lines: int = 5) -> str:
    """What `release status` shows below the summary: plans and output tails of the steps
    that ran, every decision, and the recent events."""
    lines = []
    if status.revision:  # what the release obeys and deploys, pinned when it started
        bundle = status.bundle.removeprefix("sha256:")[:12]
        lines.append(f"obeys {status.application} revision {status.revision}; deploys bundle {bundle}")
    for env in status.environments:
        for step in env.steps:
            if step.plan and env.phase is not Phase.waiting:  # a waiting environment's plans are in the summary
                # The summary is the latest word on the step: its plan's, or its apply's once applied.
                lines.append(f"plan of {env.name}/{step.name}" + (f" ({step.summary})" if step.summary else ":"))
                lines += [f"  {line}" for line in step.plan.splitlines()]
            if step.output:
                lines.append(f"output of {env.name}/{step.name} (last lines):")
                lines += [f"  {line}" for line in step.output.splitlines()[-output_lines:]]
    if status.decisions:
        lines.append("decisions:")
        for d in status.decisions:
            verdict = "counted" if d.accepted else f"refused: {d.reason}"
            comment = f' "{d.comment}"' if d.comment else ""
            who = d.by + (f" ({d.verified})" if d.verified else "")  # how `by` is known, when signed
            lines.append(f"  {d.at:%Y-%m-%d %H:%M:%S}  {d.environment:<12} {who} {d.verdict.value}{comment}: {verdict}")
    lines.append("recent events:")
    lines += [
        f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.environment or '-':<12} {(e.message.splitlines() or [''])[0]}"
        for e in status.events[-events:]
    ]
    return "\n".join(lines)


def decision_prompt(status: ReleaseStatus, environment: str, verdict: Verdict) -> str:
    """What an approver sees before the decision is sent: what a signed decision names, too."""
    env = status.environment(environment)
    started = status.initiator + (f", {status.initiator_verified}" if status.initiator_verified else "")
    lines = [f"{verdict.value} {status.service} {status.version} into {environment} (started by {started})"]
    if env.waiting_on:
        lines.append(f"  waiting on: {env.waiting_on}")
    if status.revision:
        digest = f" (digest {_short(status.revision_digest)})" if status.revision_digest else ""
        lines.append(f"  obeys {status.application} revision {status.revision}{digest}")
    if status.bundle:
        lines.append(f"  deploys bundle {_short(status.bundle)}")
    for step in env.steps:
        if step.plan or step.plan_digest:
            digest = f" [plan {_short(step.plan_digest)}]" if step.plan_digest else ""
            lines.append(f"  plan of {step.name}{digest}" + (f": {step.summary}" if step.summary else ":"))
            lines += [f"    {line}" for line in step.plan.splitlines()]
    return "\n".join(lines)


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def release_table(rows: list[ListedRelease]) -> str:
    lines = [f"{'RELEASE':<40} {'STATE':<10} {'ENVIRONMENT':<12} STARTED"]
    for r in rows:
        started = r.started_at.isoformat()[:19] if r.started_at else ""
        lines.append(f"{r.release_id:<40} {r.state:<10} {r.environment or '-':<12} {started}")
    return "\n".join(lines)
