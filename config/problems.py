"""Pydantic's validation errors turned into located problems a person can act on.

Each error becomes ``file:line: field: message (hint: ...)``: the line comes from the
YAML document, the hint from the model (the keys allowed where an unknown one stands,
the field's description where a value has the wrong format).
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from .base import NAME_HINT
from .errors import ConfigError, Problem
from .yamlsource import Document, PathKey


def parse_model(doc: Document, model: type[BaseModel], data: Any = None, prefix: PathKey = ()) -> Any:
    """Validate ``data`` (default: the whole document) as ``model``; ConfigError if it is not."""
    try:
        return model.model_validate(doc.data if data is None else data)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, doc, model, prefix)) from None
    except RecursionError:
        raise ConfigError([doc.problem(prefix, "values nested too deeply")]) from None


def problems_from(exc: ValidationError, doc: Document, model: type[BaseModel], prefix: PathKey) -> list[Problem]:
    """One located problem per error in ``exc``; ``prefix`` is where ``model``'s data sits in ``doc``."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"].removeprefix("Value error, ")
        hint = ""
        kind = err["type"]
        pattern = str(err.get("ctx", {}).get("pattern", ""))
        if kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message = f"unknown key {loc[-1]!r}"
            hint = (
                f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(allowed)}" if allowed else "")
            )
        elif kind == "missing":
            message = "this field is required"
            hint = f"add `{loc[-1]}:`" if loc else ""
        elif kind == "string_pattern_mismatch" and "a-z0-9" in pattern:
            message = f"{err['input']!r} is not a valid name"
            hint = NAME_HINT if "_" not in pattern else "start with a lowercase letter; then letters, digits, _ or -"
        elif kind == "string_pattern_mismatch":
            message = f"{err['input']!r} is not in the expected format"
            hint = _description(model, loc)
        elif kind in ("model_type", "dict_type"):
            message = f"expected a mapping of keys, got {type(err['input']).__name__}"
        problems.append(doc.problem((*prefix, *loc), message, hint))
    return problems


def dedupe(problems: list[Problem]) -> list[Problem]:
    """Each problem once, however its file was named (a file can be read as given and, found
    again through a service, by its absolute path), in the order first found."""
    seen: set[tuple[object, ...]] = set()
    out = []
    for p in problems:
        key = (os.path.realpath(p.file), p.line, p.loc, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def known_hint(known: Iterable[str]) -> str:
    """The hint for an unknown template name."""
    return "known names: " + ", ".join(sorted(known))


def _model_at(model: type[BaseModel], loc: PathKey) -> type[BaseModel] | None:
    """The model class whose fields are the YAML keys at ``loc`` (None if not a model)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            if info is None:
                return None
            current = info.annotation
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _fields_at(model: type[BaseModel], loc: PathKey) -> list[str]:
    """Field names (YAML keys) accepted at ``loc`` inside ``model``; [] if unknown."""
    found = _model_at(model, loc)
    return [f.alias or n for n, f in found.model_fields.items()] if found else []


def _description(model: type[BaseModel], loc: PathKey) -> str:
    parent = _model_at(model, loc[:-1]) if loc else None
    if parent is None:
        return ""
    info = next((f for n, f in parent.model_fields.items() if loc[-1] in (n, f.alias)), None)
    return (info.description or "") if info else ""


def _unwrap(annotation: Any) -> Any:
    """Strip Optional[...] and Annotated[...] down to the interesting type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = models[0] if models else args[0]
        else:
            return annotation
