"""Kubernetes and Argo Rollouts steps in whole releases: the CLI, a real worker process, the
embedded Temporal server, and the real ``kubernetes`` client talking HTTP to the fake API
server (``tests/kubeapi``) in this process.

* What approvers see before deciding is the server-side dry-run diff; what lands is the
  approved objects with the environment's overrides.
* A worker killed while a step waits for health is replaced by one that waits again and
  applies nothing: counted in the apply requests the API server received.
* A canary walks its pauses as the environment's rules pass and ends Healthy and fully
  promoted; an operator's abort sends it back to stable and fails the release.
"""

from __future__ import annotations

import json
import shutil
import signal
import textwrap
import uuid
from pathlib import Path

from test_reliability import kill_worker_and_children

from conftest import REPO, Cli, WorkerThread, wait_for, waiting_in
from kubeapi import FakeCluster

DEPLOYMENT = """
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
data: {RELEASE: "{{ version }}"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "ghcr.io/acme/web:0"}]
"""

ROLLOUT = """
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "ghcr.io/acme/web:0"}]
  strategy:
    canary:
      steps: [{setWeight: 20}, {pause: {}}, {setWeight: 60}, {pause: {}}]
"""


def write(
    project, kubeconfig: Path, step: str, manifests: str, app: str, overrides: str = "", step_extra: str = ""
) -> Path:
    service = f"""
service: checkout
application: shop
parameters:
  image: {{type: image}}
steps:
  - name: web
    {step}:
      manifests: [k8s]
      kubeconfig: {kubeconfig}
      images: {{web: "{{{{ params.image }}}}"}}
      poll_interval: 100ms
{step_extra}    heartbeat_timeout: 2s
    retry: {{initial_interval: 200ms}}
{overrides}"""
    service_file = project(service, app=app)
    (service_file.parent / "k8s").mkdir()
    (service_file.parent / "k8s" / "web.yaml").write_text(textwrap.dedent(manifests).lstrip())
    return service_file


def applies(cluster: FakeCluster) -> int:
    """Server-side applies that changed something (dry-runs are plans)."""
    return cluster.count("PATCH", content_type="apply-patch", dry_run=False)


def test_approvers_see_the_dry_run_diff_and_each_environment_gets_its_overrides(cli, worker, project, tmp_path):
    app = """
application: shop
environments:
  - name: staging
  - name: production
    preconditions:
      - approval: {approvers: [alice]}
"""
    overrides = "environments:\n  production:\n    steps:\n      web: {kubernetes: {replicas: 3}}\n"
    with FakeCluster(ready_after=2) as cluster:
        service_file = write(project, cluster.kubeconfig(tmp_path / "kc"), "kubernetes", DEPLOYMENT, app, overrides)
        release = project.release_id("1.4.0")
        started = cli.run(
            "release", "start", str(service_file), "--version", "1.4.0", "--param", "image=ghcr.io/acme/web:1.4.0"
        )
        assert started.returncode == 0, started.stderr
        waiting_in(cli, release, "production", "approval")
        # Staging is live with its own values; production is planned, not touched.
        assert cluster.get("apps/v1", "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"] == (
            "ghcr.io/acme/web:1.4.0"
        )
        status = cli.json("release", "status", release)
        plan = next(s for s in status["environments"][1]["steps"] if s["name"] == "web")["plan"]
        assert "spec.replicas: 1 -> 3" in plan, plan  # the diff a dry-run of the production objects gives
        assert cluster.get("apps/v1", "Deployment", "web")["spec"]["replicas"] == 1
        decided = cli.run("approve", release, "--as", "alice", "--yes")
        assert decided.returncode == 0, decided.stdout + decided.stderr
        done = cli.run(
            "release",
            "start",
            str(service_file),
            "--version",
            "1.4.0",
            "--param",
            "image=ghcr.io/acme/web:1.4.0",
            "--wait",
            "--json",
        )
        assert json.loads(done.stdout)["state"] == "succeeded", done.stdout + done.stderr
        deployment = cluster.get("apps/v1", "Deployment", "web")
        assert deployment["spec"]["replicas"] == 3
        assert cluster.get("v1", "ConfigMap", "web")["data"] == {"RELEASE": "1.4.0"}
        assert [m["manager"] for m in deployment["metadata"]["managedFields"]] == ["prodline"]


def test_a_worker_killed_while_waiting_for_health_resumes_waiting_without_applying_again(cli, project, tmp_path):
    app = "application: shop\nenvironments:\n  - name: production\n"
    # Ready only after 40 status reads, 100 ms apart: the wait is well under way when the worker dies.
    with FakeCluster(ready_after=40) as cluster:
        service_file = write(project, cluster.kubeconfig(tmp_path / "kc"), "kubernetes", DEPLOYMENT, app)
        env = dict(cli.env, PRODLINE_TASK_QUEUE=f"kube-{uuid.uuid4().hex[:8]}")
        runner = Cli(env)
        runner._applied = cli._applied  # the application is registered once, by the session's registry
        worker = cli.worker(env)
        try:
            started = runner.run(
                "release", "start", str(service_file), "--version", "2.0.0", "--param", "image=ghcr.io/acme/web:2"
            )
            assert started.returncode == 0, started.stderr
            deployment_reads = lambda: cluster.count("GET", path_contains="/deployments/web", dry_run=False)  # noqa: E731
            wait_for(lambda: deployment_reads() >= 5, timeout=60, what="the step to wait for health")
            applied_before_kill = applies(cluster)
            assert applied_before_kill == 2  # the ConfigMap and the Deployment, once each
            kill_worker_and_children(worker)
            reads_at_kill = deployment_reads()
            worker = cli.worker(env)
            done = runner.run(
                "release",
                "start",
                str(service_file),
                "--version",
                "2.0.0",
                "--param",
                "image=ghcr.io/acme/web:2",
                "--wait",
                "--json",
            )
            assert json.loads(done.stdout)["state"] == "succeeded", done.stdout + done.stderr
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        assert applies(cluster) == applied_before_kill  # the new worker waited; it applied nothing
        assert deployment_reads() > reads_at_kill
        status = runner.json("release", "status", project.release_id("2.0.0"))
        web = status["environments"][0]["steps"][0]
        assert "successfully rolled out" in web["summary"], web


CANARY_APP = """
application: shop
environments:
  - name: production
    preconditions:
      - approval: {approvers: [alice]}
    checks:
      - name: smoke
        command: {run: "true"}
        when: [after_deploy]
"""

# Pause 1 waits for the environment's approval again; pause 2 for its smoke check.
PAUSES = "      pauses: [{approval: true}, {checks: [smoke]}]\n"


def released(cli: Cli, service_file: Path, version: str, *pauses_to_approve: str) -> dict:
    """Start a release of ``version``, approve it (and the canary pauses named), wait for its end."""
    image = f"--param=image=ghcr.io/acme/web:{version}"
    started = cli.run("release", "start", str(service_file), "--version", version, image)
    assert started.returncode == 0, started.stderr
    release = json.loads(cli.run("release", "list", "--json").stdout)[0]["release_id"]
    for what in ("precondition approval", *pauses_to_approve):
        waiting_in(cli, release, "production", what)
        decided = cli.run("approve", release, "--as", "alice", "--yes")
        assert decided.returncode == 0, decided.stdout + decided.stderr
    done = cli.run("release", "start", str(service_file), "--version", version, image, "--wait", "--json")
    return json.loads(done.stdout)


def test_a_canary_walks_its_pauses_on_the_rules_and_an_abort_goes_back_to_stable(cli, worker, project, tmp_path):
    with FakeCluster(preinstalled_crds=["rollouts.argoproj.io"]) as cluster:
        kubeconfig = cluster.kubeconfig(tmp_path / "kc")
        service_file = write(project, kubeconfig, "rollout", ROLLOUT, CANARY_APP, step_extra=PAUSES)
        # 1.0.0: the first Rollout goes Healthy at once (Argo skips the steps of a first rollout).
        assert released(cli, service_file, "1.0.0")["state"] == "succeeded"
        stable = cluster.get("argoproj.io/v1alpha1", "Rollout", "web")["status"]["stableRS"]
        # 1.1.0 walks both pauses: alice approves at the first, smoke passes at the second.
        assert released(cli, service_file, "1.1.0", "approval at canary pause 1")["state"] == "succeeded"
        rollout = cluster.get("argoproj.io/v1alpha1", "Rollout", "web")
        assert rollout["status"]["phase"] == "Healthy" and rollout["status"]["stableRS"] != stable
        promotes = [r for r in cluster.requests if r.method == "PATCH" and r.path.endswith("/rollouts/web/status")]
        assert len(promotes) == 2  # one per pause, each through the status subresource
        events = [e["message"] for e in cli.json("release", "status", project.release_id("1.1.0"))["events"]]
        assert any(e.startswith("check smoke at canary pause 2") and "passed" in e for e in events), events
        # 1.2.0: at the first pause an operator aborts: back to stable, and the release fails.
        release = project.release_id("1.2.0")
        image = "--param=image=ghcr.io/acme/web:1.2.0"
        assert cli.run("release", "start", str(service_file), "--version", "1.2.0", image).returncode == 0
        waiting_in(cli, release, "production", "precondition approval")
        assert cli.run("approve", release, "--as", "alice", "--yes").returncode == 0
        waiting_in(cli, release, "production", "approval at canary pause 1")
        aborted = cli.run("release", "abort", release, "--as", "ops", "--reason", "latency")
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        # (not `release start --wait`: after a failure, a start runs the version again)
        done = wait_for(
            lambda: (st := cli.json("release", "status", release))["state"] == "failed" and st, what="the end"
        )
        assert done["state"] == "failed" and done["reason"] == "production: canary web aborted by ops (latency)"
        rollout = cluster.get("argoproj.io/v1alpha1", "Rollout", "web")
        assert rollout["status"].get("abort") is True and rollout["status"]["stableRS"] != stable


def test_the_rollouts_example_releases_into_an_empty_cluster(cli, temporal, task_queue, tmp_path, monkeypatch):
    """examples/rollouts as shipped: its second step's namespace comes from its first step."""
    example = tmp_path / "rollouts"
    shutil.copytree(REPO / "examples/rollouts", example)
    app = f"web-{uuid.uuid4().hex[:6]}"
    for path in (example / "prodline.yaml", example / "storefront/prodline.service.yaml"):
        path.write_text(path.read_text().replace("application: web\n", f"application: {app}\n"))
    with FakeCluster(preinstalled_crds=["rollouts.argoproj.io"]) as cluster:
        # The example names no cluster: the worker's own KUBECONFIG is used.
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kc")))
        worker = WorkerThread(temporal.address, task_queue).start()
        try:
            release = f"{app}.storefront@1.0.0"
            started = cli.run(
                "release", "start", str(example / "storefront/prodline.service.yaml"), "--version", "1.0.0"
            )
            assert started.returncode == 0, started.stderr
            waiting_in(cli, release, "production", "stable")  # staging done; production soaks 30m first
            staging = cli.json("release", "status", release)["environments"][0]
            assert staging["phase"] == "succeeded", staging
            assert cluster.get("v1", "Namespace", "storefront", None) is not None
            assert cluster.get("v1", "ConfigMap", "storefront", "storefront")["data"]["RELEASE"] == "1.0.0"
            rollout = cluster.get("argoproj.io/v1alpha1", "Rollout", "storefront", "storefront")
            assert rollout["status"]["phase"] == "Healthy"
            assert cluster.get("apps/v1", "Deployment", "storefront-worker", "storefront") is not None
            assert cli.run("release", "cancel", release, "--wait").returncode == 0
        finally:
            worker.stop()
