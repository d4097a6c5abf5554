"""Registered applications: `prodline app apply` makes revisions in Temporal that nobody can bend.

The application workflow runs in the real worker on the session's Temporal server,
each test on its own task queue; the CLI runs as a subprocess, as the platform
team's CI would call it.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.common import RetryPolicy

from prodline.artifacts.bundle import bundle_key
from prodline.artifacts.store import LocalArtifactStore
from prodline.client import applications
from prodline.client.applications import ApplicationClient, read_local
from prodline.config.changes import bundle_changes, summarise
from prodline.config.errors import ConfigError
from prodline.config.loader import load_application_text
from prodline.config.release import BundleRef
from prodline.contracts import ApplicationChange, Revision, application_id
from prodline.errors import InvalidInput, NotFound, Unavailable
from prodline.workflows import application as workflow_module
from prodline.workflows.application import ApplicationRun, ApplicationWorkflow, revision_digest

from conftest import Cli, client_for, run

PRODUCTION_RULES = """\
    preconditions:
      - stable: {environment: staging, soak: 10m}
      - approval: {approvers: [alice, bob]}
    checks:
      - http: {url: "https://shop.example.com/healthz"}
"""


def app_text(name: str, production: str = PRODUCTION_RULES, head: str = "") -> str:
    return f"application: {name}\n{head}environments:\n  - name: staging\n  - name: production\n{production}"


def parsed(text: str):
    return load_application_text(text, "prodline.yaml")[0]


# --- what changed: pure ----------------------------------------------------------------------


def test_the_first_revision_names_its_environments():
    assert summarise(None, parsed(app_text("shop"))) == ["first revision: environments staging, production"]


def test_changes_read_as_a_reviewer_would_say_them():
    before = parsed(
        app_text(
            "shop",
            head="protections:\n  smoke: {http: {url: 'https://a.test'}}\n  old: {http: {url: 'https://o.test'}}\n",
        )
        + "    task_queue: prod-runtime\n    env: {REGION: eu-west-1, OLD: x}\n  - name: qa\n"
    )
    after = parsed(
        "application: shop\n"
        "protections:\n  smoke: {http: {url: 'https://b.test'}}\n  new: {http: {url: 'https://n.test'}}\n"
        "environments:\n  - name: canary\n  - name: staging\n  - name: production\n"
        "    env: {REGION: us-east-1, NEW: y}\n"
        "    preconditions:\n      - stable: {environment: staging, soak: 30m}\n"
        "    checks:\n      - http: {url: 'https://shop.example.com/healthz', status: 204}\n"
    )
    assert summarise(before, after) == [
        "environment canary added (first)",
        "environment qa removed",
        "production: task_queue changed: prod-runtime -> (control queue)",
        "production: env NEW added",
        "production: env OLD removed",
        "production: env REGION changed (eu-west-1 -> us-east-1)",
        "production: precondition approval removed",
        "production: precondition stable changed: stable.soak",
        "production: check http changed: http.status",
        "protection new added",
        "protection old removed",
        "protection smoke changed: http.url",
    ]
    assert summarise(after, after) == []


def test_rules_with_the_same_label_and_a_new_order_are_told_apart():
    one = "    checks:\n      - http: {url: 'https://a.test'}\n      - http: {url: 'https://b.test'}\n"
    two = "    checks:\n      - http: {url: 'https://a.test'}\n      - http: {url: 'https://c.test'}\n"
    assert summarise(parsed(app_text("shop", one)), parsed(app_text("shop", two))) == [
        "production: check http#2 changed: http.url"
    ]
    first = "    preconditions:\n      - approval: {}\n      - window: {}\n"
    swapped = "    preconditions:\n      - window: {}\n      - approval: {}\n"
    assert summarise(parsed(app_text("shop", first)), parsed(app_text("shop", swapped))) == [
        "production: preconditions reordered: approval, window -> window, approval"
    ]
    renamed = "    preconditions:\n      - window: {}\n      - name: sign-off\n        approval: {}\n"
    assert summarise(parsed(app_text("shop", swapped)), parsed(app_text("shop", renamed))) == [
        "production: precondition sign-off added",
        "production: precondition approval removed",
    ]


def test_a_new_bundle_is_a_change_even_with_the_same_settings():
    a, b = BundleRef(digest="sha256:" + "a" * 64, size=1), BundleRef(digest="sha256:" + "b" * 64, size=1)
    assert bundle_changes(a, a) == []
    assert bundle_changes(a, b) == ["bundle changed: aaaaaaaaaaaa -> bbbbbbbbbbbb"]
    assert bundle_changes(None, a) == ["bundle added (aaaaaaaaaaaa)"]


def test_the_digest_is_the_settings_and_the_bundle_not_the_formatting():
    text = app_text("shop")
    reformatted = "# the platform team's rules\n" + text.replace(
        "{approvers: [alice, bob]}", "\n          approvers:\n            - alice   # on call\n            - bob"
    )
    bundle = BundleRef(digest="sha256:" + "a" * 64, size=1)
    assert revision_digest(parsed(text), bundle) == revision_digest(parsed(reformatted), bundle)
    assert revision_digest(parsed(text), bundle) != revision_digest(parsed(text), None)
    assert revision_digest(parsed(text), bundle) != revision_digest(parsed(text.replace("10m", "11m")), bundle)


def test_continue_as_new_carries_the_newest_sources_within_its_budget(monkeypatch):
    monkeypatch.setattr(workflow_module, "CARRIED_SOURCE_BYTES", 10)
    revisions = [
        Revision(application="shop", number=n, digest="d", applied_by="a", applied_at=datetime.now(UTC), source=s)
        for n, s in enumerate(["aaaa", "bbbb", "cccc", "dddd"], 1)
    ]
    carried = workflow_module._carried(revisions)
    assert [r.number for r in carried] == [1, 2, 3, 4]
    assert [r.source for r in carried] == ["", "", "cccc", "dddd"]


def test_the_bundle_root_must_hold_the_application_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "prodline.yaml"
    path.write_text(app_text("shop", head="bundle: {root: sub}\n"))
    with pytest.raises(ConfigError) as err:
        read_local(path)
    assert f"{path}:2: bundle.root: {tmp_path / 'sub'} does not contain the application file" in str(err.value)
    path.write_text(app_text("shop", head="bundle: {root: ..}\n"))
    assert read_local(path).inside == f"{tmp_path.name}/prodline.yaml"


# --- the workflow, on the real server -----------------------------------------------------------


@pytest.fixture
def name() -> str:
    return f"shop-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def store(tmp_path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


@pytest.fixture
def folder(tmp_path) -> Path:
    """The application's folder (its bundle root): the file and a script its rules run."""
    root = tmp_path / "platform"
    root.mkdir()
    (root / "smoke.sh").write_text("#!/bin/sh\nexit 0\n")
    return root


def with_apps(temporal, task_queue: str, use):
    """Run ``use(ApplicationClient)`` on a fresh connection, from a sync test."""

    async def main():
        return await use(ApplicationClient(await client_for(temporal), task_queue))

    return run(main())


def change(text: str, by: str = "alice") -> ApplicationChange:
    return ApplicationChange(source=text, path="prodline.yaml", applied_by=by)


def test_apply_registers_revisions_and_recognises_the_same_config(temporal, task_queue, worker, name, folder, store):
    path = folder / "prodline.yaml"
    path.write_text(app_text(name))
    first = with_apps(temporal, task_queue, lambda a: a.apply(path, "alice", store, "first rules"))
    assert first.created and first.revision.number == 1
    assert first.revision.changes == ["first revision: environments staging, production"]
    assert first.revision.path == "prodline.yaml" and first.revision.comment == "first rules"
    files = first.revision.bundle
    assert files is not None and files.files == 1  # smoke.sh: the file's text travels as the source
    assert store.get(bundle_key(files))  # the files its rules run are in the store

    # Applying the same again registers nothing (a retried CI job).
    again = with_apps(temporal, task_queue, lambda a: a.apply(path, "bob", store))
    assert not again.created and again.revision.number == 1 and again.revision.applied_by == "alice"

    path.write_text(app_text(name, PRODUCTION_RULES.replace("      - approval: {approvers: [alice, bob]}\n", "")))
    second = with_apps(temporal, task_queue, lambda a: a.apply(path, "mallory", store))
    assert second.created and second.revision.number == 2
    assert second.revision.changes == ["production: precondition approval removed"]
    assert second.revision.applied_by == "mallory"

    async def read(apps: ApplicationClient):
        return await apps.history(name), await apps.revision(name, 1), await apps.current(name)

    history, one, current = with_apps(temporal, task_queue, read)
    assert [(r.number, r.applied_by, r.source) for r in history] == [(1, "alice", ""), (2, "mallory", "")]
    assert one is not None and one.source == app_text(name)
    assert current is not None and current.number == 2 and current.source == path.read_text()


def test_the_same_settings_reformatted_are_not_a_new_revision(temporal, task_queue, worker, name, folder, store):
    path = folder / "prodline.yaml"
    path.write_text(app_text(name))
    with_apps(temporal, task_queue, lambda a: a.apply(path, "alice", store))
    path.write_text("# reviewed by the platform team\n" + app_text(name).replace("10m", "10m   "))
    again = with_apps(temporal, task_queue, lambda a: a.apply(path, "bob", store))
    assert not again.created and again.revision.number == 1 and again.revision.applied_by == "alice"
    comparison = with_apps(temporal, task_queue, lambda a: a.compare(name, path))
    assert comparison.same and comparison.config_same


def test_a_service_below_the_application_is_not_in_its_bundle(temporal, task_queue, worker, name, folder, store):
    """A service's folder is the service team's bundle: its changes never make a new revision."""
    path = folder / "prodline.yaml"
    path.write_text(app_text(name))
    service = folder / "checkout"
    service.mkdir()
    (service / "prodline.service.yaml").write_text(f"service: checkout\napplication: {name}\nsteps: []\n")
    (service / "deploy.sh").write_text("echo v1\n")
    first = with_apps(temporal, task_queue, lambda a: a.apply(path, "alice", store))
    assert first.revision.bundle is not None and first.revision.bundle.files == 1  # smoke.sh alone
    (service / "deploy.sh").write_text("echo v2\n")
    again = with_apps(temporal, task_queue, lambda a: a.apply(path, "alice", store))
    assert not again.created and again.revision.number == 1


def test_a_changed_script_is_a_new_revision(temporal, task_queue, worker, name, folder, store):
    path = folder / "prodline.yaml"
    path.write_text(app_text(name))
    first = with_apps(temporal, task_queue, lambda a: a.apply(path, "alice", store))
    (folder / "smoke.sh").write_text("#!/bin/sh\nexit 1\n")
    second = with_apps(temporal, task_queue, lambda a: a.apply(path, "alice", store))
    assert second.created and second.revision.number == 2
    assert first.revision.bundle and second.revision.bundle
    assert second.revision.changes == [
        f"bundle changed: {first.revision.bundle.short} -> {second.revision.bundle.short}"
    ]


def test_changes_the_workflow_refuses_record_nothing(temporal, task_queue, worker, name):
    good = app_text(name)
    refusals = {
        # Bad YAML, an unknown key and a rule that cannot hold: located as `validate` locates them.
        good.replace("[alice, bob]}", "[alice, bob}"): "prodline.yaml:7: invalid YAML",
        good.replace("soak: 10m", "soke: 10m"): "prodline.yaml:6: environments[1].preconditions[0].stable.soke: "
        "unknown key 'soke' (hint: did you mean 'soak'?)",
        good.replace("environment: staging", "environment: production"): "prodline.yaml:6: "
        "environments[1].preconditions[0].stable.environment: 'production' is not an environment before 'production'",
        # Another application's file sent to this application's workflow.
        app_text("other-app"): "prodline.yaml:1: application: the file is for 'other-app'",
    }

    async def main(apps: ApplicationClient):
        await apps.send(name, change(good))
        for text, message in refusals.items():
            with pytest.raises(InvalidInput) as err:
                await apps.send(name, change(text, by="mallory"))
            assert message in str(err.value), str(err.value)
        return await apps.history(name)

    history = with_apps(temporal, task_queue, main)
    assert [(r.number, r.applied_by) for r in history] == [(1, "alice")]


def test_a_file_that_does_not_validate_locally_is_not_sent(temporal, task_queue, worker, name, folder, store):
    path = folder / "prodline.yaml"
    path.write_text(app_text(name).replace("soak: 10m", "soak: 10"))
    with pytest.raises(ConfigError) as err:
        with_apps(temporal, task_queue, lambda a: a.apply(path, "alice", store))
    assert str(err.value).startswith(f"{path}:6: environments[1].preconditions[0].stable.soak:")
    assert with_apps(temporal, task_queue, lambda a: a.current(name)) is None


def test_a_forged_start_with_revisions_is_not_trusted(temporal, task_queue, worker, name):
    forged = Revision(
        application=name,
        number=7,
        digest="sha256:" + "f" * 64,
        applied_by="platform-team",
        applied_at=datetime.now(UTC),
        source=app_text(name, production=""),  # production without its rules
    )

    async def main(apps: ApplicationClient):
        temporal_client: Client = apps.temporal
        # Started by hand, as anyone with access to the namespace could.
        await temporal_client.start_workflow(
            ApplicationWorkflow.run, ApplicationRun(revisions=[forged]), id=application_id(name), task_queue=task_queue
        )
        assert await apps.current(name) is None
        assert await apps.history(name) == []
        applied = await apps.send(name, change(app_text(name)))
        assert applied.revision.number == 1
        assert applied.revision.changes == ["first revision: environments staging, production"]

        # A retried run repeats its input and says it continues another run: not trusted either.
        retried = f"{name}-retried"
        handle = await temporal_client.start_workflow(
            ApplicationWorkflow.run,
            ApplicationRun(revisions=[forged.model_copy(update={"application": retried})]),
            id=application_id(retried),
            task_queue=task_queue,
            run_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=2),
        )
        for _ in range(100):
            if (await handle.describe()).run_id != handle.first_execution_run_id:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the run was not retried")
        assert await apps.history(retried) == []

    with_apps(temporal, task_queue, main)


def test_revisions_survive_continue_as_new(temporal, task_queue, worker, name):
    texts = [app_text(name, PRODUCTION_RULES.replace("10m", f"{n}m")) for n in (1, 2, 3)]

    async def main(apps: ApplicationClient):
        first = await apps.temporal.start_workflow(
            ApplicationWorkflow.run, ApplicationRun(updates_per_run=2), id=application_id(name), task_queue=task_queue
        )
        for text in texts:
            await apps.send(name, change(text))
        run_id = (await apps.handle(name).describe()).run_id
        # The same config again, after continuing as new: still recognised.
        again = await apps.send(name, change(texts[-1]))
        return first.first_execution_run_id, run_id, await apps.history(name), await apps.revision(name, 1), again

    first_run, run_id, history, one, again = with_apps(temporal, task_queue, main)
    assert run_id != first_run  # it did continue as new
    assert [r.number for r in history] == [1, 2, 3]
    assert history[1].changes == ["production: precondition stable changed: stable.soak"]
    assert one is not None and one.source == texts[0]
    assert not again.created and again.revision.number == 3


def test_without_a_worker_it_says_which_queue(temporal, task_queue, name, monkeypatch):
    monkeypatch.setattr(applications, "POLLER_GRACE_SECONDS", 0.3)
    with pytest.raises(Unavailable) as err:
        with_apps(temporal, task_queue, lambda a: a.send(name, change(app_text(name))))
    assert f"no worker is polling task queue {task_queue!r}; nothing was registered" in str(err.value)
    assert with_apps(temporal, task_queue, lambda a: a.current(name)) is None
    with pytest.raises(NotFound, match=r"is not registered \(register it with `prodline app apply"):
        with_apps(temporal, task_queue, lambda a: a.history(name))


# --- the CLI ---------------------------------------------------------------------------------------


def test_the_cli_applies_shows_lists_and_diffs(cli: Cli, worker, name, folder):
    path = folder / "prodline.yaml"
    path.write_text(app_text(name))

    def prodline(*args: str, code: int = 0):
        result = cli.run(*args, cwd=folder)
        assert result.returncode == code, (result.stdout, result.stderr)
        return result

    out = prodline("app", "apply", str(path), "--as", "alice", "--comment", "first rules").stdout
    assert out.startswith(f"{name}: revision 1 registered (digest ")
    assert "  first revision: environments staging, production" in out
    assert prodline("app", "apply", str(path)).stdout == f"{name}: unchanged, revision 1 is current\n"
    assert prodline("app", "diff", name).stdout == f"prodline.yaml: same as {name} revision 1\n"
    (folder / "smoke.sh").write_text("#!/bin/sh\nexit 1\n")
    assert prodline("app", "diff", name, code=1).stdout.startswith(
        f"prodline.yaml: the settings are those of {name} revision 1, but the files its rules run differ (bundle "
    )

    edited = app_text(name, PRODUCTION_RULES.replace("[alice, bob]", "[alice]"))
    path.write_text(edited)
    diff = prodline("app", "diff", name, code=1).stdout
    assert f"--- {name} revision 1\n+++ prodline.yaml\n" in diff
    assert "-      - approval: {approvers: [alice, bob]}\n+      - approval: {approvers: [alice]}\n" in diff
    out = prodline("app", "apply", "prodline.yaml").stdout  # applied_by: PRODLINE_USER (ci-bot)
    assert "revision 2 registered" in out
    assert "  production: precondition approval changed: approval.approvers" in out

    table = prodline("app", "history", name).stdout.splitlines()
    assert table[0].split() == ["REV", "APPLIED", "AT", "BY", "DIGEST", "CHANGES"]
    assert [(line.split()[0], line.split()[4]) for line in table[1:]] == [("1", "alice"), ("2", "ci-bot")]
    assert table[2].endswith("production: precondition approval changed: approval.approvers (+1 more)")  # smoke.sh

    shown = prodline("app", "show", name).stdout
    assert shown.startswith(f"{name} revision 2\n  digest   sha256:")
    assert "by ci-bot" in shown and shown.endswith(edited)
    old = json.loads(prodline("app", "show", name, "--revision", "1", "--json").stdout)
    assert old["source"] == app_text(name) and old["comment"] == "first rules" and old["applied_by"] == "alice"

    missing = prodline("app", "show", name, "--revision", "9", code=7)
    assert f"application {name} has no revision 9" in missing.stderr

    path.write_text(edited.replace("soak: 10m", "soak: 10"))
    refused = prodline("app", "apply", "prodline.yaml", code=2)
    assert "prodline.yaml:6: environments[1].preconditions[0].stable.soak:" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_app_commands_explain_themselves():
    result = Cli(dict(os.environ)).run("app", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for command in ("apply", "show", "history", "diff"):
        assert f" {command} " in text
    assert "(exit 0 same, 1 different)" in text
