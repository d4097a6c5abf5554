"""Automatic rollbacks of Terraform and Kubernetes steps, read back from what was deployed.

A failed release in an environment with ``rollback: {automatic: true}`` re-deploys the version
verified there before from the ledger's record: its bundle, parameters and steps. These tests
read the result where it lands, not in prodline's own status: the Terraform state the worker
keeps for production (real embedded Terraform, ``terraform_data``, no provider), and the
Deployment the fake Kubernetes API server (``tests/kubeapi``) holds in production's namespace.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from prodline.activities.steps.terraform import local_state_dir
from prodline.activities.terraform import embedded_terraform_binary

from conftest import APP, ProjectFiles, ledgers, service, step
from kubeapi import FakeCluster

ROLLING_APP = APP + "    rollback: {automatic: true}\n"


def production_ledger(temporal, project: ProjectFiles) -> list[tuple[str, str, str]]:
    """(version, state, kind) of every record in production's ledger, oldest first."""
    _, production = ledgers(temporal, project)
    return [(r.version, r.state.value, r.kind) for r in production]


ROLLED_BACK = [
    ("1.0.0", "succeeded", "release"),
    ("1.0.0", "succeeded", "rollback"),
    ("1.1.0", "rolled_back", "release"),
]


# --- Terraform ---------------------------------------------------------------------------------

MODULE = """
variable "app_version" { type = string }
resource "terraform_data" "app" {
  input = var.app_version
}
"""
# 1.1.0's module also creates a cache: re-deploying 1.0.0's own module must remove it again.
MODULE_WITH_CACHE = MODULE + 'resource "terraform_data" "cache" {\n  input = "cache-${var.app_version}"\n}\n'

TERRAFORM_STEP = """  - name: infra
    terraform:
      dir: infra
      binary: {binary}
      variables: {{app_version: "{{{{ version }}}}"}}
    heartbeat_timeout: 5s
    retry: {{attempts: 2, initial_interval: 100ms}}"""

MIGRATE = 'echo "$PRODLINE_VERSION" > "../migrated-$PRODLINE_ENVIRONMENT"\n'


def terraform_service(project: ProjectFiles, module: str, migrate: str) -> Path:
    """A terraform step, then a command step (``migrate.sh``) after it; the module in ``infra/``."""
    infra = TERRAFORM_STEP.format(binary=embedded_terraform_binary())
    service_file = project(
        service(infra, step("migrate", "./migrate.sh")), app=ROLLING_APP, scripts={"migrate.sh": migrate}
    )
    (service_file.parent / "infra").mkdir(exist_ok=True)
    (service_file.parent / "infra" / "main.tf").write_text(textwrap.dedent(module))
    return service_file


def terraform_inputs(project: ProjectFiles, environment: str) -> dict[str, object]:
    """Each resource's input in the infra step's state in ``environment`` (the workspace named after it),
    where the worker keeps it: its data dir (PRODLINE_TERRAFORM_DATA_DIR), not a copy of the bundle."""
    folder = local_state_dir(project.application, "checkout", environment, "infra")
    state = json.loads((folder / "workspaces" / environment / "terraform.tfstate").read_text())
    return {r["name"]: r["instances"][0]["attributes"]["input"]["value"] for r in state["resources"]}


def test_a_step_failing_after_terraform_restores_the_verified_terraform_state(cli, worker, project, tmp_path, temporal):
    service_file = terraform_service(project, MODULE, MIGRATE)
    first = cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert terraform_inputs(project, "production") == {"app": "1.0.0"}

    # 1.1.0: a new module, applied in production, then its migration fails there.
    broken = MIGRATE + '[ "$PRODLINE_ENVIRONMENT" != production ] || { echo "schema migration failed" >&2; exit 3; }\n'
    terraform_service(project, MODULE_WITH_CACHE, broken)
    result = cli.run("release", "start", str(service_file), "--version", "1.1.0", "--wait", "--json")
    assert result.returncode == 9, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "rolled_back", outcome["reason"]
    assert "step migrate failed" in outcome["reason"] and "schema migration failed" in outcome["reason"]
    assert outcome["reason"].endswith("rolled back to 1.0.0")

    # Production's state is 1.0.0's again, from 1.0.0's own module (1.1.0's cache is gone);
    # 1.0.0's migration ran again after it. Staging keeps 1.1.0.
    assert terraform_inputs(project, "production") == {"app": "1.0.0"}
    assert (tmp_path / "migrated-production").read_text() == "1.0.0\n"
    assert terraform_inputs(project, "staging") == {"app": "1.1.0", "cache": "cache-1.1.0"}
    assert (tmp_path / "migrated-staging").read_text() == "1.1.0\n"
    assert production_ledger(temporal, project) == ROLLED_BACK


# --- Kubernetes (the fake API server) ----------------------------------------------------------

DEPLOYMENT = """
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

KUBERNETES_SERVICE = """
service: checkout
application: shop
parameters:
  image: {{type: image, default: "ghcr.io/acme/web:{version}"}}
steps:
  - name: web
    kubernetes:
      manifests: [k8s]
      namespace: "{{{{ environment }}}}"
      images: {{web: "{{{{ params.image }}}}"}}
      poll_interval: 100ms
    heartbeat_timeout: 2s
    retry: {{attempts: 2, initial_interval: 200ms}}
{overrides}"""


def kubernetes_service(project: ProjectFiles, kubeconfig: Path, version: str, overrides: str = "") -> Path:
    """A kubernetes step whose image is the ``image`` parameter (default: the version's image);
    every environment reaches the cluster through the application's ``env.KUBECONFIG``."""
    app = "application: shop\nenvironments:\n" + "".join(
        f"  - name: {name}\n    env: {{KUBECONFIG: {kubeconfig}}}\n    rollback: {{automatic: true}}\n"
        for name in ("staging", "production")
    )
    service_file = project(KUBERNETES_SERVICE.format(version=version, overrides=overrides), app=app)
    (service_file.parent / "k8s").mkdir(exist_ok=True)
    (service_file.parent / "k8s" / "web.yaml").write_text(textwrap.dedent(DEPLOYMENT).lstrip())
    return service_file


def image_in(cluster: FakeCluster, namespace: str) -> str:
    deployment = cluster.get("apps/v1", "Deployment", "web", namespace=namespace)
    assert deployment is not None, f"no Deployment web in namespace {namespace}"
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def applied_images(cluster: FakeCluster, namespace: str) -> list[str]:
    """The image of every server-side apply of Deployment web in ``namespace`` that was not a dry-run."""
    path = f"/namespaces/{namespace}/deployments/web"
    return [
        r.body["spec"]["template"]["spec"]["containers"][0]["image"]
        for r in list(cluster.requests)
        if r.method == "PATCH" and "apply-patch" in r.content_type and not r.dry_run and r.path.endswith(path)
    ]


def test_a_rollout_past_its_deadline_restores_the_verified_image(cli, worker, project, tmp_path, temporal):
    # An image containing "broken" never becomes available: its rollout exceeds the progress deadline.
    with FakeCluster(ready_after=2, deadline_after=3, broken_images=("broken",)) as cluster:
        for namespace in ("staging", "production"):
            cluster.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        kubeconfig = cluster.kubeconfig(tmp_path / "kc")
        service_file = kubernetes_service(project, kubeconfig, "1.0.0")
        first = cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait")
        assert first.returncode == 0, first.stdout + first.stderr
        assert image_in(cluster, "production") == "ghcr.io/acme/web:1.0.0"

        # 1.1.0's production image is broken (a per-environment parameter of its service file).
        broken = "environments:\n  production:\n    parameters: {image: ghcr.io/acme/web:1.1.0-broken}\n"
        kubernetes_service(project, kubeconfig, "1.1.0", broken)
        result = cli.run("release", "start", str(service_file), "--version", "1.1.0", "--wait", "--json")
        assert result.returncode == 9, result.stdout + result.stderr
        outcome = json.loads(result.stdout)
        assert outcome["state"] == "rolled_back", outcome["reason"]
        assert "step web failed" in outcome["reason"] and "ProgressDeadlineExceeded" in outcome["reason"]
        assert outcome["reason"].endswith("rolled back to 1.0.0")

        # The API server holds 1.0.0's image again in production (the parameters 1.0.0 recorded),
        # rolled out and available; staging keeps 1.1.0's.
        assert image_in(cluster, "production") == "ghcr.io/acme/web:1.0.0"
        production = cluster.get("apps/v1", "Deployment", "web", namespace="production")
        assert production is not None
        assert {c["type"]: c["status"] for c in production["status"]["conditions"]}["Available"] == "True"
        assert image_in(cluster, "staging") == "ghcr.io/acme/web:1.1.0"
        # What production was sent, in order: 1.0.0, the broken 1.1.0, then 1.0.0 again.
        sent = applied_images(cluster, "production")
        assert [image for i, image in enumerate(sent) if i == 0 or sent[i - 1] != image] == [
            "ghcr.io/acme/web:1.0.0",
            "ghcr.io/acme/web:1.1.0-broken",
            "ghcr.io/acme/web:1.0.0",
        ], sent
    assert production_ledger(temporal, project) == ROLLED_BACK
