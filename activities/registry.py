"""Registries of kind adapters, keyed by the config model each adapter declares.

A step runner or rule evaluator names its model (``spec_type``); the kind name
comes from the config (the field of ``Step`` or of the rule kinds holding that
model), so a name is never written twice and an adapter for a model that is no
kind is refused when the worker starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar


class Adapter(Protocol):
    spec_type: ClassVar[type[Any]]


AdapterT = TypeVar("AdapterT", bound=Adapter)


def by_declared_model(
    adapters: Iterable[AdapterT], kinds: Mapping[str, type], what: str, refused: Mapping[str, str] | None = None
) -> dict[str, AdapterT]:
    """``{kind: adapter}``; ``refused`` names kinds no adapter may take, with the reason."""
    kind_of = {model: kind for kind, model in kinds.items()}
    registry: dict[str, AdapterT] = {}
    for adapter in adapters:
        kind = kind_of.get(adapter.spec_type)
        name = f"{type(adapter).__name__}.spec_type {adapter.spec_type.__name__}"
        if kind is None:
            raise TypeError(f"{name} is no {what}")
        if refused and kind in refused:
            raise TypeError(f"{name}: {refused[kind]}")
        registry[kind] = adapter
    return registry
