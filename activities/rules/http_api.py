"""Calling the HTTP APIs rules depend on (Alertmanager, Prometheus), one way.

Every call has a timeout. Network trouble and 5xx answers raise a retryable
``ApplicationError`` (Temporal retries the activity); 4xx answers mean the
rule itself is wrong and raise a non-retryable one carrying the server's
explanation. ``transport`` is injectable, as in httpx, for tests.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from temporalio.exceptions import ApplicationError

from prodline.contracts import NON_RETRYABLE_CONFIG


async def get_json(
    url: str,
    params: list[tuple[str, str]],
    timeout: timedelta,
    *,
    what: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Any:
    try:
        async with httpx.AsyncClient(timeout=timeout.total_seconds(), transport=transport) as client:
            response = await client.get(url, params=params)
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
