"""What an activity knows about the release it works for.

:class:`RunContext` travels in workflow history, so it holds names and
non-secret values only. Secret values are read from the worker's own
environment here, at the last moment, and go only into the child process's
environment (and into the list of strings masked in its output).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from prodline.config.templates import TemplateError, render, render_all

NON_RETRYABLE_CONFIG = "ConfigurationError"
# Raised by apply when the state changed since the plan; the workflow decides what next.
STALE_PLAN = "StalePlan"


class RunContext(BaseModel):
    release_id: str
    application: str
    service: str
    version: str
    environment: str
    initiator: str = "unknown"
    base_dir: str = Field(description="Folder relative workdirs resolve from.")
    parameters: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict, description="Parameter -> worker environment variable.")
    env: dict[str, str] = Field(default_factory=dict, description="The environment's own variables.")
    args: dict[str, str] = Field(default_factory=dict, description="Arguments of a protection.")
    run_id: str = Field("", description="Workflow run: a re-run of a release never reuses a plan.")
    outputs: dict[str, str] = Field(default_factory=dict, description="steps.NAME.outputs.KEY -> value, earlier steps.")
    sensitive_outputs: dict[str, str] = Field(
        default_factory=dict, description="steps.NAME.outputs.KEY -> artifact key holding the (secret) value."
    )

    def template_values(self) -> dict[str, str]:
        values = {
            "application": self.application,
            "service": self.service,
            "version": self.version,
            "environment": self.environment,
            "release": self.release_id,
        }
        values.update({f"params.{k}": v for k, v in self.parameters.items()})
        values.update({f"args.{k}": v for k, v in self.args.items()})
        values.update(self.outputs)
        values.update(self.sensitive_values())
        return values

    def sensitive_values(self) -> dict[str, str]:
        """Sensitive outputs of earlier steps, read from the artifact store (never from history)."""
        if not self.sensitive_outputs:
            return {}
        from .artifacts import default_store

        store, loaded, values = default_store(), {}, {}
        for name, key in self.sensitive_outputs.items():
            if key not in loaded:
                loaded[key] = json.loads(store.get(key))
            value = loaded[key][name.rsplit(".", 1)[1]]
            values[name] = value if isinstance(value, str) else json.dumps(value)
        return values

    def render(self, value):
        """Render templates in a string or nested value; unknown names are config errors."""
        try:
            return (
                render(value, self.template_values())
                if isinstance(value, str)
                else render_all(value, self.template_values())
            )
        except TemplateError as exc:
            raise ApplicationError(str(exc), type=NON_RETRYABLE_CONFIG, non_retryable=True) from None

    def secret_values(self) -> dict[str, str]:
        """Read secret parameters from the worker's environment."""
        values = {}
        for name, variable in self.secrets.items():
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
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
        env.update(
            PRODLINE_APPLICATION=self.application,
            PRODLINE_SERVICE=self.service,
            PRODLINE_VERSION=self.version,
            PRODLINE_ENVIRONMENT=self.environment,
            PRODLINE_RELEASE=self.release_id,
            PRODLINE_INITIATOR=self.initiator,
        )
        for name, value in {**self.parameters, **secrets}.items():
            env[f"PRODLINE_PARAM_{_env_name(name)}"] = value
        for name, value in self.args.items():
            env[f"PRODLINE_ARG_{_env_name(name)}"] = value
        env.update(self.render(self.env))
        env.update(self.render(extra))
        return env

    def workdir(self, relative: str) -> str:
        path = (Path(self.base_dir) / self.render(relative)).resolve()
        if not path.is_dir():
            raise ApplicationError(
                f"working directory {path} does not exist on the worker", type=NON_RETRYABLE_CONFIG, non_retryable=True
            )
        return str(path)


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name).upper()
