"""A release's run context as a worker sees it: templates, secrets, environment, paths.

:class:`~prodline.contracts.RunContext` travels in workflow history, so it is
data only: names and non-secret values. This helper gives it meaning on the
worker, at the last moment: it renders templates, reads secret parameters
from the worker's own environment (they go only into the child process's
environment and the list of strings masked in its output), reads earlier
steps' sensitive outputs from the artifact store, and builds the child's
environment and working directory (inside the attempt's copy of the bundle,
:mod:`.workspace`). Every runner and evaluator starts with
``ctx = WorkerContext(run.context)``.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

from prodline.artifacts.store import ArtifactStore, sha256
from prodline.config.templates import TemplateError, render, render_all
from prodline.contracts import NON_RETRYABLE_CONFIG, RunContext

from .workspace import current_workspace, shared_store


class WorkerContext:
    def __init__(self, run: RunContext, store: ArtifactStore | None = None):
        self.run = run
        self._store = store

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = shared_store()
        return self._store

    @functools.cached_property
    def _values(self) -> dict[str, str]:
        # Read once per activity: it includes sensitive outputs from the artifact store, and a
        # step renders many strings (every variable, env entry and path).
        return self.template_values()

    def template_values(self) -> dict[str, str]:
        r = self.run
        values = {
            "application": r.application,
            "service": r.service,
            "version": r.version,
            "environment": r.environment,
            "release": r.release_id,
        }
        values.update({f"params.{k}": v for k, v in r.parameters.items()})
        values.update({f"args.{k}": v for k, v in r.args.items()})
        values.update(r.outputs)
        values.update(self.sensitive_values())
        return values

    def sensitive_values(self) -> dict[str, str]:
        """Sensitive outputs of earlier steps, read from the artifact store (never from history)."""
        if not self.run.sensitive_outputs:
            return {}
        loaded: dict[str, Any] = {}
        values: dict[str, str] = {}
        for name, key in self.run.sensitive_outputs.items():
            if key not in loaded:
                data = self.store.get(key)
                expected = self.run.output_digests.get(key)
                if expected and sha256(data) != expected:  # rewritten behind the store's back
                    raise ApplicationError(
                        f"the stored outputs {key!r} are not the ones the step that made them stored "
                        "(checksum mismatch): refused",
                        type=NON_RETRYABLE_CONFIG,
                        non_retryable=True,
                    )
                loaded[key] = json.loads(data)
            value = loaded[key][name.rsplit(".", 1)[1]]
            values[name] = value if isinstance(value, str) else json.dumps(value)
        return values

    def render(self, value: Any) -> Any:
        """Render templates in a string or nested value; unknown names are config errors."""
        try:
            values = self._values
            return render(value, values) if isinstance(value, str) else render_all(value, values)
        except TemplateError as exc:
            raise ApplicationError(str(exc), type=NON_RETRYABLE_CONFIG, non_retryable=True) from None

    def secret_values(self) -> dict[str, str]:
        """Read secret parameters from the worker's environment."""
        values = {}
        for name, variable in self.run.secrets.items():
            value = os.environ.get(variable)
            if value is None:
                raise ApplicationError(
                    f"secret parameter {name!r} needs the environment variable {variable} on the worker",
                    type=NON_RETRYABLE_CONFIG,
                    non_retryable=True,
                )
            values[name] = value
        return values

    def process_env(self, extra: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
        """The child's environment: the worker's, then prodline's variables, then the config's.

        The worker's own Temporal credentials are not passed on: steps have no business with them.
        """
        r = self.run
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
        env.update(
            PRODLINE_APPLICATION=r.application,
            PRODLINE_SERVICE=r.service,
            PRODLINE_VERSION=r.version,
            PRODLINE_ENVIRONMENT=r.environment,
            PRODLINE_RELEASE=r.release_id,
            PRODLINE_INITIATOR=r.initiator,
        )
        for name, value in {**r.parameters, **secrets}.items():
            env[f"PRODLINE_PARAM_{_env_name(name)}"] = value
        for name, value in r.args.items():
            env[f"PRODLINE_ARG_{_env_name(name)}"] = value
        env.update(self.render(r.env))
        env.update(self.render(extra))
        return env

    def workdir(self, relative: str) -> str:
        """A step's or rule's working directory: inside this attempt's copy of the bundle."""
        code = current_workspace() if self.run.bundle is not None else None
        if self.run.bundle is not None and code is None:
            raise RuntimeError("a bundle's working directory is only known inside attempt_workspace()")
        base = code / self.run.base_dir if code is not None else Path(self.run.base_dir)
        path = (base / self.render(relative)).resolve()
        if code is not None and not path.is_relative_to(code.resolve()):
            raise ApplicationError(
                f"working directory {relative!r} leaves the bundle", type=NON_RETRYABLE_CONFIG, non_retryable=True
            )
        if not path.is_dir():
            raise ApplicationError(
                f"working directory {path} does not exist on the worker", type=NON_RETRYABLE_CONFIG, non_retryable=True
            )
        return str(path)


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name).upper()
