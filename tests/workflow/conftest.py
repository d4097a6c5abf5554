"""Fixtures of the workflow-logic tests: releases on the session's server, activities scripted."""

from __future__ import annotations

import textwrap

import pytest

from prodline.config.release import ReleaseRequest, load_request

from .harness import Releases, Script
from conftest import ProjectFiles, client_for  # tests/conftest.py; this one is workflow.conftest

# The service most tests release: one command step, `deploy`.
ONE_STEP_SERVICE = """
service: checkout
application: shop
steps:
  - name: deploy
    command: {apply: ./deploy.sh}
"""


@pytest.fixture
async def releases(temporal) -> Releases:
    return Releases(await client_for(temporal))


@pytest.fixture
def script() -> Script:
    return Script()


class Requests:
    """Release requests built from an application file and a service file, as `release start` does."""

    def __init__(self, project: ProjectFiles):
        self.project = project

    def __call__(
        self, app: str, service: str = ONE_STEP_SERVICE, version: str = "1.0.0", initiator: str = "ci-bot"
    ) -> ReleaseRequest:
        service_file = self.project(textwrap.dedent(service), app=textwrap.dedent(app))
        return load_request(service_file, version, {}, initiator)


@pytest.fixture
def request_for(project) -> Requests:
    """``request_for(APP_YAML[, SERVICE_YAML])``: the ReleaseRequest of the test's own application."""
    return Requests(project)
