"""Fixtures of the workflow-logic tests: releases on the session's server, activities scripted."""

from __future__ import annotations

import textwrap

import pytest

from prodline.config.release import ReleaseRequest, load_plan

from .harness import Planned, Releases, Script
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
    """Releases of an application file and a service file: the request and its resolved plan."""

    def __init__(self, project: ProjectFiles):
        self.project = project

    def __call__(
        self, app: str, service: str = ONE_STEP_SERVICE, version: str = "1.0.0", initiator: str = "ci-bot"
    ) -> Planned:
        service_file = self.project(textwrap.dedent(service), app=textwrap.dedent(app))
        plan = load_plan(service_file, {}, initiator)
        # The freeze gate every environment starts with is tested with real freezes (test_freezes.py);
        # here it would only add an evaluation to every scripted call list.
        unfrozen = [
            env.model_copy(update={"preconditions": [r for r in env.preconditions if r.kind != "freeze"]})
            for env in plan.environments
        ]
        plan = plan.model_copy(update={"environments": unfrozen})
        request = ReleaseRequest(
            application=self.project.application, service="checkout", version=version, initiator=initiator
        )
        return Planned(request, plan)


@pytest.fixture
def request_for(project) -> Requests:
    """``request_for(APP_YAML[, SERVICE_YAML])``: a release of the test's own application."""
    return Requests(project)
