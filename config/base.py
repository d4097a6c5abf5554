"""Shared building blocks for the config models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

# Names end up in workflow IDs, search attributes, Kubernetes labels and
# Terraform workspaces, so they follow the strictest of those: a DNS label.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
NAME_HINT = "use lowercase letters, digits and dashes, like checkout-api"

# Parameter and argument names become template names and environment variables
# (PRODLINE_PARAM_DB_PASSWORD), so underscores are welcome.
ParamName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]

# A version is part of the release ID and is handed to commands in the
# environment, so it is kept shell- and URL-safe.
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")]

ScalarValue = str | int | float | bool


class Model(BaseModel):
    """Strict base: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)


def one_of(model: BaseModel, kinds: tuple[str, ...], what: str) -> str:
    """Return the single kind field set on ``model`` or raise a helpful error."""
    present = [k for k in kinds if getattr(model, k, None) is not None]
    if len(present) != 1:
        listed = ", ".join(kinds)
        found = f"found {', '.join(present)}" if present else "found none"
        raise ValueError(f"a {what} needs exactly one of: {listed} ({found})")
    return present[0]


def unique_names(items: list, what: str) -> list:
    """Refuse a second item with a name already used, located at that item's ``name``."""
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.name in seen:
            error = PydanticCustomError(
                "duplicate_name",
                "{what} '{name}' is listed twice; {what} names must be unique",
                {"what": what, "name": item.name},
            )
            raise ValidationError.from_exception_data(
                what, [InitErrorDetails(type=error, loc=(index, "name"), input=item.name)]
            )
        seen.add(item.name)
    return items
