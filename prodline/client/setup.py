"""The search attributes a namespace needs before releases can run in it.

Releases are started with prodline's search attributes and found by them
(``release list``, the Temporal UI). ``prodline dev`` registers them on its
embedded server; on any other cluster ``prodline setup`` does, through the
operator service, once per namespace. Without them Temporal refuses every
start, so a start or a list that fails for want of them says to run setup.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from prodline.errors import InvalidInput, Unavailable
from prodline.workflows import search_attributes

_NAMES = [key.name for key in search_attributes.ALL]


class NotSetUp(Unavailable):
    """The namespace lacks prodline's search attributes (exit code 6: the cluster, not the input, needs fixing)."""


@dataclass(frozen=True)
class Setup:
    """What ``prodline setup`` found and did on one namespace."""

    namespace: str
    added: list[str]
    present: list[str]


async def missing(client: Client) -> list[str]:
    """prodline's search attributes the namespace does not have."""
    known = await _registered(client)
    return [name for name in _NAMES if name not in known]


async def check(client: Client) -> None:
    """Raise :class:`NotSetUp` when the namespace lacks any of prodline's search attributes."""
    absent = await missing(client)
    if absent:
        raise NotSetUp(
            f"namespace {client.namespace!r} has no search attribute {', '.join(absent)}: "
            "run `prodline setup` once to register prodline's search attributes there"
        )


async def raise_if_not_set_up(client: Client, error: RPCError) -> None:
    """Turn Temporal's refusal into a pointer at ``prodline setup`` when missing attributes caused it."""
    if error.status != RPCStatusCode.INVALID_ARGUMENT or "search attribute" not in error.message.lower():
        return
    try:
        await check(client)
    except RPCError:
        return  # cannot tell: Temporal's own message stands


async def register(client: Client) -> Setup:
    """Register the missing search attributes (idempotent); refuse one registered with another type."""
    known = await _registered(client)
    wrong = [
        f"{key.name} is {known[key.name]}, not {key.indexed_value_type.name.capitalize()}"
        for key in search_attributes.ALL
        if key.name in known and known[key.name] != key.indexed_value_type.name.capitalize()
    ]
    if wrong:
        raise InvalidInput(
            f"namespace {client.namespace!r} has search attributes of the wrong type: {'; '.join(wrong)} "
            "(remove them with `temporal operator search-attribute remove`, then run `prodline setup` again)"
        )
    absent = [key for key in search_attributes.ALL if key.name not in known]
    if absent:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in absent},
                )
            )
        except RPCError as exc:
            if exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
                raise Unavailable(
                    f"Temporal refused to register search attributes ({exc.message}); on Temporal Cloud "
                    f"add {', '.join(k.name for k in absent)} (Keyword) with tcld or the Cloud UI"
                ) from None
            raise
    return Setup(
        namespace=client.namespace,
        added=[key.name for key in absent],
        present=[name for name in _NAMES if name in known],
    )


async def _registered(client: Client) -> dict[str, str]:
    """The namespace's custom search attributes and their types ("Keyword", "Text", ...)."""
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return {
        name: IndexedValueType.Name(kind).removeprefix("INDEXED_VALUE_TYPE_").capitalize()
        for name, kind in response.custom_attributes.items()
    }
