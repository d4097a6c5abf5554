"""A days-long wait stays inside Temporal's history limit.

Temporal terminates a workflow whose history reaches 51,200 events. A release that
waits on a rule adds the same events for every evaluation; after ``POLLS_AT_INTERVAL``
evaluations the workflow stretches the interval (``poll_interval``) so that the rest of
the wait fits in as many again. This measures what one evaluation adds in a real wait and
applies the workflow's own schedule to a wait of three days.
"""

from __future__ import annotations

from datetime import timedelta

from prodline.contracts import EVALUATE_RULE
from prodline.workflows.gates import POLLS_AT_INTERVAL, poll_interval

from .harness import failed, passed

HISTORY_LIMIT = 51_200

APP = """
application: shop
environments:
  - name: staging
    checks:
      - name: smoke
        command: {run: ./smoke.sh}
        when: [before_deploy]
        interval: 1s
"""


def evaluations_in_wait(interval: timedelta, timeout: timedelta, stretch: bool = True) -> int:
    """How many times a rule that never passes is evaluated before its wait times out.

    The workflow's loop (``Gates.hold``): evaluate, pick the next interval, time out when
    it would end past the deadline, else sleep. Evaluations are taken to be instant.
    """
    elapsed, polls = timedelta(0), 0
    while True:
        polls += 1
        pause = poll_interval(interval, timeout, polls) if stretch else interval
        if elapsed + pause > timeout:
            return polls
        elapsed += pause


async def test_a_three_day_wait_at_a_30s_interval_stays_under_the_history_limit(releases, script, request_for):
    script.on("evaluate", "smoke", failed(), failed(), failed(), passed())
    async with releases.running(request_for(APP), script) as run:
        done = await run.finish()
        history = (await run.handle.fetch_history()).events
    assert done.state == "succeeded", done.reason
    # Where each evaluation starts; from the second on, the wait is in its steady state (it
    # already says what it waits on), so the events between two evaluations repeat as they are.
    starts = [
        i
        for i, e in enumerate(history)
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == EVALUATE_RULE
    ]
    assert len(starts) == 4
    per_evaluation = starts[2] - starts[1]
    assert starts[3] - starts[2] == per_evaluation
    # A short wait keeps the configured interval.
    timers = [e.timer_started_event_attributes for e in history if e.HasField("timer_started_event_attributes")]
    assert [t.start_to_fire_timeout.ToTimedelta() for t in timers] == [timedelta(seconds=1)] * 3

    interval, wait = timedelta(seconds=30), timedelta(days=3)
    stretched = evaluations_in_wait(interval, wait)
    unstretched = evaluations_in_wait(interval, wait, stretch=False)
    assert POLLS_AT_INTERVAL < stretched <= 2 * POLLS_AT_INTERVAL
    assert unstretched == 8_641  # one at the start, then one every 30 s for three days

    def events_of_release_with(evaluations: int) -> int:
        return len(history) + (evaluations - len(starts)) * per_evaluation

    measured = f"{per_evaluation} events per evaluation, {len(history)} in this release of {len(starts)}"
    assert events_of_release_with(stretched) < HISTORY_LIMIT, measured
    assert events_of_release_with(unstretched) > HISTORY_LIMIT  # the stretch is what keeps it alive
