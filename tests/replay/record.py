"""Record the release histories that tests/test_replay.py replays.

Run it when a change *intends* to alter what the workflows do for new
releases: `.venv/bin/python tests/replay/record.py` (`... record.py canary` records only
`canary.json`: an Argo Rollouts canary walked pause by pause on the fake API server in
tests/kubeapi, the first pause promoted by an operator during its watch, the second approved;
`... record.py safety` records a release rolled back automatically, one superseded in its
lane, and the ledger that kept the lane; the `.v1` ones were recorded before the patches
quick-handover, waiting-behind and superseded-is-final, the `.v2` ones before proven-rollbacks). Keep the old fixtures
too (rename them, e.g. `succeeded.v1.json`) while releases started by the old
code may still be running: the replay test must pass for every version in
flight. If an old fixture stops replaying, guard the change with
`workflow.patched("change-id")` (see README, "Changing workflows safely").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from prodline.artifacts.store import LocalArtifactStore
from prodline.client.applications import ApplicationClient
from prodline.client.prepare import prepare
from prodline.client.releases import ReleaseClient
from prodline.client.signatures import Signer
from prodline.contracts import Decision, Verdict, application_id
from prodline.identity.signing import generate
from prodline.workers.connect import connect
from prodline.workers.devserver import DevServer
from prodline.workers.supervisor import free_port
from prodline.workers.worker import build_worker
from prodline.workflows.release import ReleaseWorkflow

HERE = Path(__file__).resolve().parent
QUEUE = "replay"

APP = """\
application: shop
people:
  alice: {alice}
  bob: {bob}
environments:
  - name: staging
    checks:
      - command: {{run: "true"}}
        name: smoke
        when: [before_deploy, after_deploy]
        for: 1s
        interval: 200ms
  - name: production
    verify: ssh
    preconditions:
      - stable: {{environment: staging}}
      - approval: {{approvers: [alice, bob]}}
"""

SERVICE = """\
service: checkout
application: shop
parameters:
  replicas: {type: int, default: 1}
steps:
  - name: migrate
    command: {apply: "echo migrating", plan: "echo would migrate"}
  - name: deploy
    command: {apply: "./deploy.sh"}
    heartbeat_timeout: 2s
environments:
  production:
    parameters: {replicas: 3}
"""


async def record() -> None:
    work = Path(tempfile.mkdtemp(prefix="prodline-replay-"))
    keys = {name: work / "keys" / name for name in ("alice", "bob")}
    (work / "keys").mkdir()
    (work / "prodline.yaml").write_text(APP.format(**{name: generate(key, name) for name, key in keys.items()}))
    (work / "svc").mkdir()
    (work / "svc" / "prodline.service.yaml").write_text(SERVICE)
    deploy = work / "svc" / "deploy.sh"
    # Steps run in a copy of the bundle: the switches this script reads are named by path.
    deploy.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        [ -f {work}/fail ] && {{ echo "boom" >&2; exit 3; }}
        while [ -f {work}/hold ]; do sleep 0.05; done
        echo deployed
        """)
    )
    deploy.chmod(0o755)
    # The worker's and the CLI's shared store and the worker's bundle cache, for this run only.
    store = LocalArtifactStore(work / "artifacts")
    os.environ["PRODLINE_ARTIFACT_DIR"] = str(work / "artifacts")
    os.environ["PRODLINE_CACHE_DIR"] = str(work / "cache")
    os.environ["PRODLINE_TERRAFORM_DATA_DIR"] = str(work / "terraform")
    server = DevServer(work / "state", port=free_port(), ui=False)
    await server.start()
    try:
        client = await connect(server.address, "default")
        async with build_worker(client, QUEUE):
            service_file = work / "svc" / "prodline.service.yaml"
            applications = ApplicationClient(client, QUEUE)
            await applications.apply(work / "prodline.yaml", "platform-team", store)
            await applications.apply(work / "prodline.yaml", "platform-team", store)  # unchanged: no revision

            async def start(version: str) -> WorkflowHandle:
                request = (await prepare(client, service_file, version, {}, "ci-bot", store)).request
                return await client.start_workflow(
                    ReleaseWorkflow.run, request, id=request.release_id, task_queue=QUEUE,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )  # fmt: skip

            async def status(handle: WorkflowHandle):
                return await handle.query(ReleaseWorkflow.status)

            async def until(handle, predicate) -> None:
                for _ in range(600):
                    with contextlib.suppress(KeyError):  # no environments before the plan is resolved
                        if predicate(await status(handle)):
                            return
                    await asyncio.sleep(0.05)
                raise TimeoutError(handle.id)

            releases = ReleaseClient(client, QUEUE)

            async def decide(handle: WorkflowHandle, by: str, verdict: Verdict = Verdict.approve) -> None:
                """As `prodline approve --key`: an Update, signed over the status shown."""
                target = await releases.decision_target(handle.id, "production")
                signer = Signer(keys[by])
                signed = signer.sign(target.document(verdict, "", signer))
                await releases.decide(target, verdict, by, signed=signed)

            # succeeded: plans, checks watched after deploying, stable, an unsigned decision refused
            # (an Update), one sent the old way (a signal, still judged), and a signed one counted.
            ok = await start("1.0.0")
            await until(ok, lambda s: "approvals" in s.environment("production").waiting_on)
            unsigned = Decision(
                request_id=uuid.uuid4().hex, environment="production", by="mallory", verdict=Verdict.approve
            )
            await ok.execute_update(ReleaseWorkflow.decision, unsigned)
            await ok.signal(ReleaseWorkflow.decide, unsigned)
            await decide(ok, "alice")
            await ok.result()

            # rejected in production, signed.
            rejected = await start("1.0.1")
            await until(rejected, lambda s: "approvals" in s.environment("production").waiting_on)
            await decide(rejected, "bob", Verdict.reject)
            await _finished(rejected)

            # failed: a step exits 3 in staging.
            (work / "fail").touch()
            failed = await start("1.0.2")
            await _finished(failed)
            (work / "fail").unlink()

            # cancelled while a step runs.
            (work / "hold").touch()
            cancelled = await start("1.0.3")
            await until(cancelled, lambda s: s.environment("staging").steps[1].phase.value == "running")
            await cancelled.cancel()
            await _finished(cancelled)
            (work / "hold").unlink()

            for name, handle in (
                ("succeeded", ok),
                ("rejected", rejected),
                ("failed", failed),
                ("cancelled", cancelled),
            ):
                history = await handle.fetch_history()
                (HERE / f"{name}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
            for name, workflow_id in (
                ("ledger", "deployments:shop.checkout:staging"),
                ("application", application_id("shop")),
            ):
                entity = client.get_workflow_handle(workflow_id)
                await entity.terminate("recorded")  # close it so its history is complete
                (HERE / f"{name}.json").write_text(
                    json.dumps(json.loads((await entity.fetch_history()).to_json()), indent=1) + "\n"
                )
    finally:
        server.stop()
    print(f"recorded histories in {HERE}", file=sys.stderr)


CANARY_SERVICE = """\
service: storefront
application: web
parameters:
  image: {{type: image}}
steps:
  - name: web
    rollout:
      manifests: [rollout.yaml]
      kubeconfig: {kubeconfig}
      images: {{web: "{{{{ params.image }}}}"}}
      poll_interval: 100ms
      pauses: [{{checks: [smoke], for: 1h}}, {{approval: true}}]
"""


async def record_canary() -> None:
    """canary.json: the second release of a Rollout, pause 1 (watching a check) promoted by an
    operator through the rollout Update, pause 2 approved."""
    sys.path.insert(0, str(HERE.parent))  # tests/, for the fake API server
    from test_kubernetes_release import CANARY_APP, ROLLOUT  # the release tests' own canary

    from prodline.contracts import RolloutCommand

    from kubeapi import FakeCluster

    work = Path(tempfile.mkdtemp(prefix="prodline-replay-"))
    os.environ["PRODLINE_ARTIFACT_DIR"] = str(work / "artifacts")
    os.environ["PRODLINE_CACHE_DIR"] = str(work / "cache")
    store = LocalArtifactStore(work / "artifacts")
    # The server's files stay out of the folder the application's bundle packs.
    server = DevServer(Path(tempfile.mkdtemp(prefix="prodline-replay-server-")), port=free_port(), ui=False)
    await server.start()
    try:
        with FakeCluster(preinstalled_crds=["rollouts.argoproj.io"]) as cluster:
            (work / "prodline.yaml").write_text(CANARY_APP.replace("application: shop", "application: web"))
            (work / "svc").mkdir()
            (work / "svc" / "rollout.yaml").write_text(ROLLOUT)
            service_file = work / "svc" / "prodline.service.yaml"
            service_file.write_text(CANARY_SERVICE.format(kubeconfig=cluster.kubeconfig(work / "kubeconfig")))
            client = await connect(server.address, "default")
            async with build_worker(client, QUEUE):
                await ApplicationClient(client, QUEUE).apply(work / "prodline.yaml", "platform-team", store)

                async def start(version: str) -> WorkflowHandle:
                    params = {"image": f"ghcr.io/acme/web:{version}"}
                    request = (await prepare(client, service_file, version, params, "ci-bot", store)).request
                    return await client.start_workflow(
                        ReleaseWorkflow.run, request, id=request.release_id, task_queue=QUEUE
                    )

                async def saw(handle: WorkflowHandle, what: str) -> None:
                    """Until the release waits on ``what``, or says it in an event."""
                    for _ in range(600):
                        status = await handle.query(ReleaseWorkflow.status)
                        waits = status.environments and what in status.environments[0].waiting_on
                        if waits or any(what in e.message for e in status.events):
                            return
                        await asyncio.sleep(0.05)
                    raise TimeoutError(f"{handle.id}: {what}")

                async def approved(handle: WorkflowHandle, what: str = "precondition approval") -> WorkflowHandle:
                    await saw(handle, what)
                    decision = Decision(
                        request_id=uuid.uuid4().hex, environment="production", by="alice", verdict=Verdict.approve
                    )
                    await handle.execute_update(ReleaseWorkflow.decision, decision)
                    return handle

                await (await approved(await start("1.0.0"))).result()  # the first Rollout: Healthy at once
                canary = await approved(await start("1.1.0"))
                # Pause 1 watches smoke for an hour: an operator promotes; pause 2 waits for alice.
                await saw(canary, "watching smoke for 1h")
                await canary.execute_update(
                    ReleaseWorkflow.rollout, RolloutCommand(action="promote", by="ops", reason="recorded")
                )
                await approved(canary, "approval at canary pause 2")
                await canary.result()
                history = await canary.fetch_history()
                (HERE / "canary.json").write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    finally:
        server.stop()
    print(f"recorded {HERE / 'canary.json'}", file=sys.stderr)


SAFETY_APP = """\
application: shop
environments:
  - name: staging
  - name: production
    rollback: {automatic: true}
    preconditions:
      - approval: {}
"""

SAFETY_SERVICE = """\
service: checkout
application: shop
releases: {supersede: true}
steps:
  - name: deploy
    command: {apply: "./deploy.sh"}
"""


async def record_safety() -> None:
    """Lanes, supersede and an automatic rollback: `rolled_back.json`, `superseded.json` and the
    production ledger that kept the lane (`lane.json`)."""
    work = Path(tempfile.mkdtemp(prefix="prodline-replay-"))
    (work / "prodline.yaml").write_text(SAFETY_APP)
    (work / "svc").mkdir()
    (work / "svc" / "prodline.service.yaml").write_text(SAFETY_SERVICE)
    deploy = work / "svc" / "deploy.sh"
    deploy.write_text(
        '#!/bin/sh\n[ "$PRODLINE_ENVIRONMENT" = production ] && [ "$PRODLINE_VERSION" = 1.1.0 ] && exit 3\necho ok\n'
    )
    deploy.chmod(0o755)
    store = LocalArtifactStore(work / "artifacts")
    os.environ["PRODLINE_ARTIFACT_DIR"] = str(work / "artifacts")
    os.environ["PRODLINE_CACHE_DIR"] = str(work / "cache")
    server = DevServer(work / "state", port=free_port(), ui=False)
    await server.start()
    try:
        client = await connect(server.address, "default")
        async with build_worker(client, QUEUE):
            service_file = work / "svc" / "prodline.service.yaml"
            await ApplicationClient(client, QUEUE).apply(work / "prodline.yaml", "platform-team", store)
            releases = ReleaseClient(client, QUEUE)

            async def start(version: str) -> WorkflowHandle:
                request = (await prepare(client, service_file, version, {}, "ci-bot", store)).request
                return await client.start_workflow(
                    ReleaseWorkflow.run, request, id=request.release_id, task_queue=QUEUE
                )

            async def waiting(handle: WorkflowHandle, text: str) -> None:
                for _ in range(600):
                    with contextlib.suppress(KeyError):
                        status = await handle.query(ReleaseWorkflow.status)
                        if text in status.environment("production").waiting_on:
                            return
                    await asyncio.sleep(0.05)
                status = await handle.query(ReleaseWorkflow.status)
                raise TimeoutError(
                    f"{handle.id}: {status.state}: {[(e.name, e.phase, e.waiting_on) for e in status.environments]} {status.reason}"
                )

            async def approve(handle: WorkflowHandle, verdict: Verdict = Verdict.approve) -> None:
                await waiting(handle, "approval")
                target = await releases.decision_target(handle.id, "production")
                await releases.decide(target, verdict, "alice")

            first = await start("1.0.0")
            await approve(first)
            await _finished(first)
            # 1.1.0 holds production's lane (waiting for approval); 1.1.1 waits behind it and is
            # superseded by 1.1.2; 1.1.0 then fails in production and is rolled back to 1.0.0.
            held = await start("1.1.0")
            await waiting(held, "approval")
            queued = await start("1.1.1")
            await waiting(queued, "to leave production")
            newest = await start("1.1.2")
            await _finished(queued)
            await approve(held)
            await _finished(held)
            await approve(newest, Verdict.reject)
            await _finished(newest)
            for name, handle in (("rolled_back", held), ("superseded", queued)):
                history = await handle.fetch_history()
                (HERE / f"{name}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
            lane = client.get_workflow_handle("deployments:shop.checkout:production")
            await lane.terminate("recorded")
            (HERE / "lane.json").write_text(
                json.dumps(json.loads((await lane.fetch_history()).to_json()), indent=1) + "\n"
            )
    finally:
        server.stop()
    print(f"recorded lanes and rollbacks in {HERE}", file=sys.stderr)


async def _finished(handle: WorkflowHandle) -> None:
    with contextlib.suppress(Exception):
        await handle.result()


if __name__ == "__main__":
    recorders = {"canary": record_canary, "safety": record_safety}
    asyncio.run(recorders[sys.argv[1]]() if sys.argv[1:] else record())
