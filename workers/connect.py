"""Connecting to Temporal: one place, configured the way Temporal's own tools are.

Settings come from ``temporalio.envconfig``: ``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*``,
``TEMPORAL_PROFILE`` and the ``temporal.toml`` profiles the ``temporal`` CLI
also reads. Without any, it is the embedded dev server on localhost:7233.
"""

from __future__ import annotations

import os

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig

from prodline.errors import Unavailable

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_TASK_QUEUE = "prodline"


class TemporalUnavailable(Unavailable):
    """The Temporal server cannot be reached or refused the connection (exit code 6)."""


def connect_config(address: str | None = None, namespace: str | None = None) -> dict:
    try:
        # An empty TEMPORAL_* variable counts as unset: CI systems turn a secret that is not
        # defined into "" (an empty API key would otherwise switch TLS on, "" be a namespace).
        variables = {k: v for k, v in os.environ.items() if v or not k.startswith("TEMPORAL_")}
        config = dict(ClientConfig.load_client_connect_config(override_env_vars=variables))
    except Exception as exc:  # a broken temporal.toml or TLS file
        raise TemporalUnavailable(f"cannot load the Temporal connection settings: {exc}") from None
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if address:
        config["target_host"] = address
    if namespace:
        config["namespace"] = namespace
    return config


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    config = connect_config(address, namespace)
    try:
        return await Client.connect(**config, data_converter=pydantic_data_converter)
    except Exception as exc:
        raise TemporalUnavailable(
            f"cannot reach Temporal at {config['target_host']}: {_first_line(exc)} "
            "(start one with `prodline dev`, or set TEMPORAL_ADDRESS)"
        ) from None


def task_queue(value: str | None = None) -> str:
    return value or os.environ.get("PRODLINE_TASK_QUEUE") or DEFAULT_TASK_QUEUE


def ui_url(address: str, namespace: str, workflow_id: str | None = None) -> str | None:
    """The Temporal UI link for a release, when we know where the UI is."""
    from urllib.parse import quote

    base = os.environ.get("PRODLINE_UI_URL")
    if not base:
        host, _, port = address.rpartition(":")
        if host not in ("localhost", "127.0.0.1") or not port.isdigit():
            return None
        base = f"http://localhost:{int(port) + 1000}"  # the dev server's convention
    base = base.rstrip("/")
    if workflow_id is None:
        return f"{base}/namespaces/{quote(namespace, safe='')}/workflows"
    return f"{base}/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"


# What the Rust transport's error text says, in words a person reads.
_TRANSPORT_CAUSES = {
    "ConnectionRefused": "connection refused",
    "dns error": "unknown host",
    "TimedOut": "connection timed out",
    "tls": "TLS handshake failed",
    "InvalidCertificate": "TLS handshake failed (certificate)",
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    for needle, words in _TRANSPORT_CAUSES.items():
        if needle in text:
            return words
    line = text.splitlines()[0]
    return line if len(line) <= 200 else line[:199] + "…"
