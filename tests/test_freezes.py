"""Freezes: releases wait while an environment is frozen, by a schedule or by someone.

Scheduled freezes are pure arithmetic on a clock, tested here with the clock given. Manual
freezes are kept by the registered application's workflow on the session's real Temporal
server; the evaluator reads them there with its clock injected, so "an hour later" needs
no waiting.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from prodline.activities.rules.freeze import FreezeEvaluator
from prodline.cli import main as cli_main
from prodline.cli.freeze import until_time
from prodline.client.applications import ApplicationClient
from prodline.config.freezes import ManualFreeze, ScheduledFreeze, scheduled_freeze_at
from prodline.config.rules import FreezeRule, Precondition
from prodline.contracts import ApplicationChange, Outcome, RuleResult, RuleRun, application_id
from prodline.errors import InvalidInput, NotFound, WrongState
from prodline.workers.sandbox import WORKFLOW_RUNNER
from prodline.workers.worker import WORKFLOWS
from prodline.workflows.application import ApplicationRun, ApplicationWorkflow

from conftest import client_for, run, run_context


def at(text: str) -> datetime:
    """An aware UTC moment from "2026-03-27T13:30"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- scheduled freezes: pure -------------------------------------------------------------------


def scheduled(**fields: object) -> ScheduledFreeze:
    """A freeze as the application file writes it (text for times and durations)."""
    return ScheduledFreeze.model_validate(fields)


HOLIDAYS = scheduled(
    name="holidays",
    reason="year-end freeze",
    timezone="Europe/Berlin",
    start="2026-12-20",  # a date: 00:00 that day, Berlin time
    end="2027-01-02T00:00",
)

# Every Friday from 15:00 Berlin time, for 9 hours (to Saturday 00:00 local).
FRIDAYS = scheduled(
    name="weekend", timezone="Europe/Berlin", start="2026-01-02T15:00", rrule="FREQ=WEEKLY;BYDAY=FR", duration="9h"
)


@pytest.mark.parametrize(
    ("now", "ends"),
    [
        ("2026-12-19T22:59:59", None),  # 23:59:59 Berlin (UTC+1): the day before
        ("2026-12-19T23:00", "2027-01-01T23:00"),  # 00:00 Berlin: it starts, inclusive
        ("2027-01-01T22:59:59", "2027-01-01T23:00"),
        ("2027-01-01T23:00", None),  # the end is exclusive
    ],
)
def test_a_one_off_freeze_holds_from_its_start_to_its_end_in_its_zone(now, ends):
    found = scheduled_freeze_at([HOLIDAYS], at(now))
    assert (found and found[1]) == (at(ends) if ends else None)
    if found:
        assert found[0] is HOLIDAYS
        assert HOLIDAYS.describe(found[1]) == (
            "holidays: year-end freeze (scheduled, until Sat 2027-01-02 00:00 Europe/Berlin)"
        )


@pytest.mark.parametrize(
    ("now", "ends"),
    [
        # Winter (CET, UTC+1): Friday 15:00 Berlin is 14:00 UTC.
        ("2026-03-27T13:59:59", None),
        ("2026-03-27T14:00", "2026-03-27T23:00"),
        ("2026-03-27T22:59", "2026-03-27T23:00"),
        ("2026-03-27T23:00", None),
        # Berlin moves to summer time on Sunday 2026-03-29: the next Friday 15:00 is 13:00 UTC.
        ("2026-04-03T12:59", None),
        ("2026-04-03T13:00", "2026-04-03T22:00"),
        ("2026-04-03T21:59", "2026-04-03T22:00"),
        ("2026-04-03T22:00", None),
        # Other days: not frozen.
        ("2026-04-01T14:00", None),
        ("2026-01-01T14:00", None),  # before the first occurrence
    ],
)
def test_a_weekly_freeze_follows_the_local_clock_across_a_dst_change(now, ends):
    found = scheduled_freeze_at([FRIDAYS], at(now))
    assert (found and found[1]) == (at(ends) if ends else None)


def test_an_occurrence_spanning_the_dst_change_ends_at_its_local_time():
    # Saturday 22:00 for 8h: the clocks jump an hour that night, so it ends Sunday 06:00 CEST (04:00 UTC).
    nights = scheduled(
        name="nights", timezone="Europe/Berlin", start="2026-03-07T22:00", rrule="FREQ=WEEKLY;BYDAY=SA", duration="8h"
    )
    assert scheduled_freeze_at([nights], at("2026-03-29T03:59")) == (nights, at("2026-03-29T04:00"))
    assert scheduled_freeze_at([nights], at("2026-03-29T04:00")) is None


def test_of_several_freezes_in_force_the_one_ending_last_is_reported():
    nightly = scheduled(
        name="nightly", start="2026-12-01T22:00", rrule="FREQ=DAILY", duration="10h", timezone="Europe/Berlin"
    )
    freeze, ends = scheduled_freeze_at([nightly, HOLIDAYS], at("2026-12-24T22:00")) or (None, None)
    assert freeze is HOLIDAYS and ends == at("2027-01-01T23:00")
    # Overlapping occurrences of one rule: the 36h ones started yesterday and today both cover now.
    long = scheduled(name="long", start="2026-12-01T00:00", rrule="FREQ=DAILY", duration="36h")
    assert scheduled_freeze_at([long], at("2026-12-10T13:00")) == (long, at("2026-12-11T12:00"))
    assert scheduled_freeze_at([], at("2026-12-10T13:00")) is None


def freeze_error(**fields) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as caught:
        ScheduledFreeze.model_validate({"name": "x", "start": "2026-01-02T15:00", **fields})
    error = caught.value.errors()[0]
    return error["loc"], error["msg"].removeprefix("Value error, ")


@pytest.mark.parametrize(
    ("fields", "loc", "message"),
    [
        ({"rrule": "FREQ=FORTNIGHTLY", "duration": "1h"}, ("rrule",), "'FREQ=FORTNIGHTLY' is not an RFC 5545 rule"),
        ({"rrule": "weekly", "duration": "1h"}, ("rrule",), "each part is NAME=VALUE, separated by ;"),
        ({"rrule": "FREQ=WEEKLY;UNTIL=20270101T000000Z", "duration": "1h"}, ("rrule",), "write it without Z"),
        ({"rrule": "FREQ=WEEKLY;COUNT=0", "duration": "1h"}, ("rrule",), "never occurs"),
        (
            {"rrule": "DTSTART:20260101T000000\nRRULE:FREQ=DAILY", "duration": "1h"},
            ("rrule",),
            "its first occurrence is `start`",
        ),
        ({"rrule": "FREQ=WEEKLY"}, ("duration",), "a recurring freeze needs `duration`"),
        ({"rrule": "FREQ=WEEKLY", "duration": "0s"}, ("duration",), "must be longer than 0s"),
        ({"rrule": "FREQ=WEEKLY", "duration": "1h", "end": "2027-01-01"}, ("end",), "not both"),
        ({"duration": "1h", "end": "2027-01-01"}, ("duration",), "`duration` belongs to a recurring freeze"),
        ({}, ("end",), "a freeze needs `end` (a one-off range), or `rrule` and `duration`"),
        ({"end": "2026-01-02T14:00"}, ("end",), "end 2026-01-02 14:00 must be after start 2026-01-02 15:00"),
        ({"end": "2027-01-02T00:00Z"}, ("end",), "without an offset"),
        ({"end": "2027-01-02", "timezone": "Europe/Berlinn"}, ("timezone",), "unknown time zone 'Europe/Berlinn'"),
    ],
)
def test_a_bad_scheduled_freeze_names_its_field_and_the_fix(fields, loc, message):
    found_loc, found = freeze_error(**fields)
    assert found_loc == loc and message in found, (found_loc, found)


def test_the_freeze_precondition_survives_history_as_it_was():
    rule = Precondition(freeze=FreezeRule(application="shop", environment="production", scheduled=[HOLIDAYS, FRIDAYS]))
    assert rule.kind == "freeze" and rule.spec.recheck_before_deploy
    again = Precondition.model_validate_json(rule.model_dump_json())
    assert again == rule and again.freeze and again.freeze.scheduled[1].duration == timedelta(hours=9)


# --- manual freezes: the application workflow, on the real server --------------------------------

APP = "application: {name}\nenvironments:\n  - name: staging\n  - name: production\n"


@pytest.fixture
def name() -> str:
    return f"shop-{uuid.uuid4().hex[:6]}"


def with_apps(temporal, task_queue, use):
    async def main():
        return await use(ApplicationClient(await client_for(temporal), task_queue))

    return run(main())


def register(apps: ApplicationClient, name: str, text: str | None = None):
    return apps.send(
        name, ApplicationChange(source=text or APP.format(name=name), path="prodline.yaml", applied_by="ops")
    )


async def evaluate(apps: ApplicationClient, name: str, environment: str, now: datetime, scheduled=()) -> RuleResult:
    spec = FreezeRule(application=name, environment=environment, scheduled=list(scheduled))
    evaluator = FreezeEvaluator(apps.temporal, clock=lambda: now)
    rule = RuleRun(context=run_context(environment=environment, application=name), rule=Precondition(freeze=spec))
    return await evaluator.evaluate(rule, spec)


def test_a_manual_freeze_holds_its_environment_until_lifted(temporal, task_queue, worker, name):
    async def main(apps: ApplicationClient):
        now = datetime.now(UTC)
        assert (await evaluate(apps, name, "production", now)).reason == "production is not frozen"  # never registered
        await register(apps, name)
        freeze = await apps.freeze(name, "production", "alice", "incident 123")
        frozen = await evaluate(apps, name, "production", now + timedelta(minutes=1))
        staging = await evaluate(apps, name, "staging", now + timedelta(minutes=1))
        lifted = await apps.unfreeze(name, "production", "bob", "fixed")
        after = await evaluate(apps, name, "production", now + timedelta(minutes=2))
        return freeze, frozen, staging, lifted, after, await apps.freezes(name)

    freeze, frozen, staging, lifted, after, kept = with_apps(temporal, task_queue, main)
    assert (freeze.environment, freeze.by, freeze.reason, freeze.until) == ("production", "alice", "incident 123", None)
    assert frozen.outcome is Outcome.pending and frozen.wait_until is None  # re-checked: it may be lifted any time
    assert frozen.reason == f"production is frozen by alice since {freeze.at:%H:%M}Z: incident 123"
    assert staging.passed
    assert [f.id for f in lifted] == [freeze.id]
    assert after.passed and after.reason == "production is not frozen"
    assert kept == []


def test_a_freeze_until_a_time_ends_by_itself_and_one_for_all_environments_holds_each(
    temporal, task_queue, worker, name
):
    async def main(apps: ApplicationClient):
        await register(apps, name)
        now = datetime.now(UTC)
        await apps.freeze(name, "staging", "alice", "load test", until=now + timedelta(hours=1))
        during = await evaluate(apps, name, "staging", now + timedelta(minutes=30))
        later = await evaluate(apps, name, "staging", now + timedelta(hours=2))
        await apps.freeze(name, "", "carol", "stop the line")
        everywhere = [await evaluate(apps, name, env, now + timedelta(hours=2)) for env in ("staging", "production")]
        with pytest.raises(WrongState) as narrow:  # it is frozen everywhere, not in production alone
            await apps.unfreeze(name, "production", "bob")
        lifted = await apps.unfreeze(name, "", "bob")
        with pytest.raises(WrongState) as nothing:
            await apps.unfreeze(name, "", "bob")
        return now, during, later, everywhere, narrow.value, lifted, nothing.value

    now, during, later, everywhere, narrow, lifted, nothing = with_apps(temporal, task_queue, main)
    until = now + timedelta(hours=1)
    assert during.outcome is Outcome.pending and during.reason.endswith(f": load test (until {until:%H:%M}Z)")
    assert later.passed  # its `until` passed on the evaluator's clock
    assert [r.outcome for r in everywhere] == [Outcome.pending, Outcome.pending]
    assert "is frozen by carol since" in everywhere[1].reason and everywhere[1].reason.endswith(": stop the line")
    assert str(narrow) == (
        f"unfreeze refused: {name} has no freeze on production alone; it is frozen in every "
        "environment (by carol): lift that with `prodline unfreeze` without --environment"
    )
    # Without --environment every freeze in force goes (the staging one's hour is not over on the real clock).
    assert [(f.by, f.environment) for f in lifted] == [("alice", "staging"), ("carol", "")]
    assert str(nothing) == f"unfreeze refused: nothing to lift: {name} has no freeze in force"


def test_a_scheduled_freeze_waits_until_it_ends_and_a_manual_one_is_named_with_it(temporal, task_queue, worker, name):
    async def main(apps: ApplicationClient):
        await register(apps, name)
        scheduled = await evaluate(apps, name, "production", at("2026-12-24T12:00"), [HOLIDAYS])
        await apps.freeze(name, "production", "alice", "incident 9")
        both = await evaluate(apps, name, "production", at("2026-12-24T12:00"), [HOLIDAYS])
        return scheduled, both

    scheduled, both = with_apps(temporal, task_queue, main)
    assert scheduled.outcome is Outcome.pending and scheduled.wait_until == at("2027-01-01T23:00")
    assert scheduled.reason == (
        "production is frozen: holidays: year-end freeze (scheduled, until Sat 2027-01-02 00:00 Europe/Berlin)"
    )
    assert both.wait_until is None and both.reason.startswith("production is frozen by alice since ")
    assert both.reason.endswith(
        "; scheduled freeze holidays: year-end freeze (scheduled, until Sat 2027-01-02 00:00 Europe/Berlin)"
    )


def test_the_workflow_refuses_freezes_it_cannot_keep_and_records_nothing(temporal, task_queue, worker, name):
    async def main(apps: ApplicationClient):
        errors = []
        # Started, but nothing registered yet (as a hand-made start would leave it).
        await apps.temporal.start_workflow(
            ApplicationWorkflow.run, ApplicationRun(), id=application_id(name), task_queue=task_queue
        )
        for call in (
            lambda: apps.freeze(name, "production", "alice", "incident"),
            lambda: register(apps, name),
            lambda: apps.freeze(name, "production", "alice", "   "),
            lambda: apps.freeze(name, "prod", "alice", "incident"),
            lambda: apps.freeze(name, "production", "alice", "incident", until=datetime.now(UTC) - timedelta(hours=1)),
            lambda: apps.unfreeze(name, "prod", "alice"),
        ):
            try:
                await call()
            except (InvalidInput, WrongState) as exc:
                errors.append(str(exc))
        with pytest.raises(NotFound, match=r"is not registered \(register it with `prodline app apply"):
            await apps.freeze(f"{name}-never", "production", "alice", "incident")
        return errors, await apps.freezes(name)

    errors, kept = with_apps(temporal, task_queue, main)
    assert errors == [
        f"freeze refused: application {name!r} is not registered (register it with `prodline app apply prodline.yaml`)",
        "freeze refused: a freeze needs a reason (--reason): whoever waits reads it",
        f"freeze refused: application {name} has no environment 'prod' (revision 1 has staging, production)",
        errors[3],  # the moment, checked below
        f"unfreeze refused: application {name} has no environment 'prod' (revision 1 has staging, production)",
    ]
    assert errors[3].startswith("freeze refused: --until ") and errors[3].endswith("Z is not in the future")
    assert kept == []


def test_freezes_survive_continue_as_new_and_a_forged_start_carries_none(temporal, task_queue, worker, name):
    async def main(apps: ApplicationClient):
        first = await apps.temporal.start_workflow(
            ApplicationWorkflow.run, ApplicationRun(updates_per_run=2), id=application_id(name), task_queue=task_queue
        )
        await register(apps, name)
        kept = await apps.freeze(name, "production", "alice", "incident 123")
        await apps.freeze(name, "staging", "alice", "short", until=datetime.now(UTC) + timedelta(seconds=1))
        await asyncio.sleep(1.2)  # the short one expires: it is not carried
        await register(apps, name, APP.format(name=name) + "    env: {REGION: eu-west-1}\n")  # 2nd apply: continues
        for _ in range(100):
            if (await apps.handle(name).describe()).run_id != first.first_execution_run_id:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the application workflow did not continue as new")
        carried = await apps.freezes(name)
        evaluated = await evaluate(apps, name, "production", datetime.now(UTC))

        # Anyone with access to the namespace can start a workflow with freezes in its input: ignored.
        forged_name = f"{name}-forged"
        forged = ManualFreeze(id="f0", by="mallory", reason="x", at=datetime.now(UTC))
        await apps.temporal.start_workflow(
            ApplicationWorkflow.run,
            ApplicationRun(freezes=[forged]),
            id=application_id(forged_name),
            task_queue=task_queue,
        )
        # The run that kept them replays as it ran (freezes, their validators, continue-as-new).
        history = await apps.temporal.get_workflow_handle(
            application_id(name), run_id=first.first_execution_run_id
        ).fetch_history()
        replayer = Replayer(
            workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=WORKFLOW_RUNNER
        )
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        return kept, carried, evaluated, await apps.freezes(forged_name), replayed.replay_failure

    kept, carried, evaluated, forged, replay_failure = with_apps(temporal, task_queue, main)
    assert replay_failure is None
    assert carried == [kept]
    assert evaluated.outcome is Outcome.pending and "incident 123" in evaluated.reason
    assert forged == []


# --- the CLI ------------------------------------------------------------------------------------


def prodline(*argv: str) -> int:
    """`prodline ARGS` in this process."""
    return cli_main.main(list(argv))


@pytest.mark.parametrize(
    ("until", "message"),
    [
        ("tomorrow", "argument --until: 'tomorrow' is neither a duration (2h, 30m, 1h30m) nor an ISO time"),
        ("2h30", "argument --until: '2h30' is neither a duration"),
        ("2020-01-01T00:00Z", "argument --until: '2020-01-01T00:00Z' is in the past"),
        ("5x", "'5x' is neither"),
    ],
)
def test_a_bad_until_is_refused_before_anything_is_sent(capsys, until, message):
    code = prodline("freeze", "--application", "shop", "--reason", "incident", "--until", until)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("prodline: error: prodline freeze: ") and message in err, err
    assert "Traceback" not in err


def test_until_takes_durations_and_iso_times():
    now = at("2026-12-24T10:00")
    assert until_time("2h", lambda: now) == at("2026-12-24T12:00")
    assert until_time("1h 30m", lambda: now) == at("2026-12-24T11:30")
    assert until_time("2026-12-24T18:00+01:00", lambda: now) == at("2026-12-24T17:00")


def test_the_cli_freezes_and_unfreezes_the_nearest_application(
    temporal, task_queue, worker, name, tmp_path, monkeypatch, capsys
):
    with_apps(temporal, task_queue, lambda apps: register(apps, name))
    (tmp_path / "prodline.yaml").write_text(APP.format(name=name))
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")  # found in the folder above, as `release start` finds it
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal.address)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
    monkeypatch.setenv("PRODLINE_TASK_QUEUE", task_queue)
    monkeypatch.setenv("PRODLINE_USER", "alice")

    assert prodline("freeze", "--environment", "production", "--reason", "incident 123", "--until", "2h") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{name}: production frozen by alice until ") and out.splitlines()[0].endswith(
        ": incident 123"
    )

    assert prodline("unfreeze", "--environment", "staging") == 8
    assert f"nothing to lift: {name} has no freeze in force on staging" in capsys.readouterr().err

    assert prodline("unfreeze", "--as", "bob") == 0
    assert capsys.readouterr().out.startswith(f"{name}: lifted 1 freeze\n  production: frozen by alice at ")

    assert prodline("freeze", "--application", name, "--environment", "prod", "--reason", "x") == 2
    assert "has no environment 'prod' (revision 1 has staging, production)" in capsys.readouterr().err

    monkeypatch.chdir("/")
    assert prodline("freeze", "--reason", "x") == 2
    assert "name the application with --application (no prodline.yaml in / or above)" in capsys.readouterr().err
