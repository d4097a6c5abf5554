"""Opt-in: the kubernetes step's apply and wait against a real cluster.

Set ``PRODLINE_TEST_KUBECONFIG`` to a kubeconfig (its current context is used) and run
``pytest -m kubernetes tests/test_kubernetes_real.py``. The test creates its own namespace
(``prodline-test-<random>``, through the step's manifests), deploys a ConfigMap, a Secret and a
two-replica Deployment of ``registry.k8s.io/pause`` there, plans (a server-side dry-run
diff), applies, waits until rolled out, checks that a second plan is unchanged, and deletes
the namespace whatever happened. Everything else is covered against the fake API server.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from kubernetes.config import new_client_from_config
from kubernetes.dynamic import DynamicClient
from test_kubernetes_step import CONFIG, DEPLOYMENT, SECRET, Service, deploy, in_activity, planned

from prodline.activities.steps.kubernetes import KubernetesRunner

VARIABLE = "PRODLINE_TEST_KUBECONFIG"

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(not os.environ.get(VARIABLE), reason=f"needs a real cluster: set {VARIABLE} to a kubeconfig"),
]


@pytest.fixture
def namespace():
    name = f"prodline-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = DynamicClient(new_client_from_config(config_file=os.environ[VARIABLE], persist_config=False))
    namespaces = client.resources.get(api_version="v1", kind="Namespace")
    try:
        client.delete(namespaces, name=name)
    except Exception as exc:
        if getattr(exc, "status", None) != 404:
            raise


def test_apply_and_wait_on_a_real_cluster(tmp_path, namespace):
    service = Service(tmp_path, Path(os.environ[VARIABLE]))
    service.write(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}", CONFIG, SECRET, DEPLOYMENT)
    runner = KubernetesRunner(service.store)
    image = {"web": "registry.k8s.io/pause:3.9"}
    run = deploy(runner, service.step(namespace=namespace, images=image, poll_interval="1s"))
    assert run.applied is not None and run.applied.summary == "applied 4 objects (4 created, 0 updated)"
    progress = in_activity(runner.wait, run, run.step.spec)
    assert progress.done and progress.message == 'deployment "web" successfully rolled out'
    again = planned(runner, service.step(namespace=namespace, images=image)).plan
    assert again is not None
    assert again.changed is False, again.output
