"""One artifact store for every worker: a plan made on one worker is applied by another.

Production runs on its own task queue. Worker A plans the Terraform step and the release
waits for approval; A goes away (killed, as a machine that died); worker B, with a disk of
its own, takes the apply after the approval and applies the very plan A made, fetched from
the S3 store (SeaweedFS, tests/s3server.py), with no second plan and no second approval.
Terraform's state is in the same object store through its S3 backend (the README's setup
for several workers), so B sees what A planned against.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator

import pytest
from test_routing import Lines, QueueWorker

from conftest import approval_app, client_for, run, wait_for, waiting_in

# The module (after its S3 backend block) says on which worker it was applied.
MODULE = """
variable "app_version" { type = string }
resource "terraform_data" "app" {
  input = var.app_version
  provisioner "local-exec" {
    command = "echo \\"applied ${var.app_version} on $RUNTIME\\" >> LOG"
  }
}
"""

SERVICE = """
service: checkout
application: shop
steps:
  - name: infra
    terraform:
      dir: infra
      variables: {app_version: "{{ version }}"}
    heartbeat_timeout: 10s
    retry: {attempts: 2, initial_interval: 100ms}
"""


@pytest.fixture
def boxes() -> Iterator[list[QueueWorker]]:
    """The test's workers, each on a disk of its own; all killed at the end."""
    started: list[QueueWorker] = []
    yield started
    for running in started:
        running.stop()


def production_app(queue: str) -> str:
    """Production only, on its own queue, behind an approval."""
    return (
        approval_app()
        .replace("  - name: staging\n", "")
        .replace("  - name: production\n", f"  - name: production\n    task_queue: {queue}\n")
    )


def test_a_plan_made_on_one_worker_is_applied_by_another(
    cli, project, tmp_path, temporal, task_queue, s3_server, boxes
):
    unique = uuid.uuid4().hex[:8]
    runtime = f"st-{unique}-production"
    store = f"{s3_server.url}/{unique}"
    bucket, prefix = store.removeprefix("s3://").split("/", 1)
    # The CLI (app apply, release start) and every worker use the same S3 store.
    cli.env.update(s3_server.env, PRODLINE_ARTIFACTS=store, PRODLINE_WORKER_CHECK_SECONDS="0.5")
    log = tmp_path / "applied.log"
    state_key = f"{prefix}/state/infra.tfstate"
    module = s3_server.terraform_backend(state_key) + MODULE.replace("LOG", str(log))
    service_file = project(SERVICE, app=production_app(runtime))
    (service_file.parent / "infra").mkdir()
    (service_file.parent / "infra" / "main.tf").write_text(textwrap.dedent(module))

    def box(name: str, queue: str) -> QueueWorker:
        """A worker with a disk of its own: cache, Terraform data, home and working directory."""
        root = tmp_path / name
        return QueueWorker(
            cli, queue, root, queue != task_queue, RUNTIME=name, PRODLINE_TERRAFORM_DATA_DIR=str(root / "terraform")
        )

    control, a = box("control", task_queue).spawn(), box("worker-a", runtime).spawn()
    boxes += [control, a]
    for started in boxes:  # together: a worker takes seconds to start
        started.ready(temporal)

    release = project.release_id("7.0.0")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "7.0.0", "--wait", "--json")
    stderr = Lines(waiting.stderr)
    status = waiting_in(cli, release, "production", "approvals")
    assert status["environments"][0]["steps"][0]["summary"] == "1 to add, 0 to change, 0 to destroy"
    assert not log.exists()
    a.stop()

    approval = cli.run("approve", release, "--as", "alice")
    assert approval.returncode == 0, approval.stdout + approval.stderr
    # A died a moment ago, so it still looks like a poller: the warning comes from the wait.
    stalled = wait_for(
        lambda: stderr.with_text(f"on task queue '{runtime}' (environment production) and no worker took it"),
        what="the stalled-work warning",
    )
    assert isinstance(stalled, str) and stalled.startswith("prodline: warning: the release's work has waited")

    b = box("worker-b", runtime).start(temporal)
    boxes.append(b)
    code = waiting.wait(60)
    outcome = json.loads(waiting.stdout.read())
    assert code == 0, json.dumps(outcome, indent=1) + b.log()[-3000:]
    assert outcome["state"] == "succeeded"
    assert [(d["by"], d["verdict"], d["accepted"]) for d in outcome["decisions"]] == [("alice", "approve", True)]
    assert log.read_text().splitlines() == ["applied 7.0.0 on worker-b"]

    # Temporal's history says who did what: A planned once, B applied; nothing was planned again.
    started = run(_activities_started(temporal, release))
    assert started == [("prodline.plan_step", a.identity), ("prodline.apply_step", b.identity)], started

    # The plan file is in the shared store, never on B's disk; the state is in the object store.
    s3 = s3_server.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert [k for k in keys if k.endswith(".tfplan")] == [
        f"{prefix}/{release}/{outcome['run_id']}/production/infra/plan.tfplan"
    ]
    state = json.loads(s3.get_object(Bucket=bucket, Key=f"env:/production/{state_key}")["Body"].read())
    assert [r["instances"][0]["attributes"]["input"]["value"] for r in state["resources"]] == ["7.0.0"]
    assert not list((tmp_path / "worker-b").rglob("*.tfplan"))
    assert not list(tmp_path.glob("worker-*/terraform/state")), "state of an S3 module stays in S3"


async def _activities_started(temporal, release: str) -> list[tuple[str, str]]:
    """(activity type, identity of the worker that started it), in order: the steps' activities
    (rules, such as the freeze gate every environment starts with, run wherever a worker is free)."""
    client = await client_for(temporal)
    history = await client.get_workflow_handle(release).fetch_history()
    scheduled: dict[int, str] = {}
    started: list[tuple[str, str]] = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        if event.HasField("activity_task_started_event_attributes"):
            attributes = event.activity_task_started_event_attributes
            if scheduled[attributes.scheduled_event_id] != "prodline.evaluate_rule":
                started.append((scheduled[attributes.scheduled_event_id], attributes.identity))
    return started
