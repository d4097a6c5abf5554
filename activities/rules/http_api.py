"""What every HTTP-based evaluator shares: an injectable transport and one way to call an API.

The transport is given by ``RuleActivities`` (``None``: the network), as in
httpx, so tests run the real client against ``httpx.MockTransport``.

``get_json`` calls the APIs rules depend on (Alertmanager, Prometheus). Every
call has a timeout. Network trouble and 5xx answers raise a retryable
``ApplicationError`` (Temporal retries the activity); 4xx answers mean the
rule itself is wrong and raise a non-retryable one carrying the server's
explanation.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from temporalio.exceptions import ApplicationError

from prodline.contracts import NON_RETRYABLE_CONFIG

from .base import RuleEvaluator, SpecT


class HttpClientEvaluator(RuleEvaluator[SpecT]):
    """An evaluator that speaks HTTP, through the transport it was given."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None):
        self._transport = transport

    def client(self, timeout: timedelta) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=timeout.total_seconds(), transport=self._transport)

    async def get_json(self, url: str, params: list[tuple[str, str]], timeout: timedelta, *, what: str) -> Any:
        try:
            async with self.client(timeout) as client:
                response = await client.get(url, params=tuple(params))
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"cannot reach {what} at {url}: {exc or type(exc).__name__}", type="Unreachable"
            ) from None
        if response.status_code >= 500:
            raise ApplicationError(f"{what} answered {response.status_code}: {response.text[:300]}", type="ServerError")
        if response.status_code >= 400:
            raise ApplicationError(
                f"{what} rejected the request ({response.status_code}): {_explain(response)}",
                type=NON_RETRYABLE_CONFIG,
                non_retryable=True,
            )
        try:
            return response.json()
        except ValueError:
            raise ApplicationError(f"{what} answered with something that is not JSON", type="BadResponse") from None


def _explain(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):  # Prometheus: {"errorType": ..., "error": ...}
        return f"{body.get('errorType', '')}: {body.get('error', body)}".strip(": ")
    return str(body)[:300]  # Alertmanager: a bare JSON string
