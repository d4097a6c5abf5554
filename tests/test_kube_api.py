"""The client adapters (activities/kube/api.py) against the fake API server: errors mapped for Temporal."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from prodline.activities.kube.api import Api
from prodline.activities.kube.cluster import UNAVAILABLE, Target, cluster_for

from kubeapi import FakeCluster


def test_a_server_error_while_looking_up_a_kind_is_retryable(tmp_path):
    """Pruning looks up each listed kind's served version; discovery is read lazily, per group."""
    with FakeCluster() as fake:
        api = Api(cluster_for(Target(kubeconfig=str(fake.kubeconfig(tmp_path / "kubeconfig")))), "default")
        # (A 503 the client takes for an unavailable aggregated API: it skips the group.)
        fake.fail_next("GET", "/apis/apps/v1", 500, "etcdserver: leader changed", times=20)
        with pytest.raises(ApplicationError) as caught:
            api.served_version("Deployment.apps")
        assert caught.value.type == UNAVAILABLE and not caught.value.non_retryable
        assert "Deployment.apps" in caught.value.message and "HTTP 500" in caught.value.message
        assert "etcdserver: leader changed" in caught.value.message
