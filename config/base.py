"""Shared building blocks for the config models."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
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


def _known_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name like Europe/Berlin") from None
    return value


# Deploy windows and scheduled freezes: an IANA zone the machine's tz database knows.
TimeZone = Annotated[str, AfterValidator(_known_zone)]

ScalarValue = str | int | float | bool


class Model(BaseModel):
    """Strict base: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)


SpecT = TypeVar("SpecT", bound=BaseModel)


def kind_fields(model: type[BaseModel], base: type[SpecT]) -> dict[str, type[SpecT]]:
    """The kind fields of ``model``, in field order: every field annotated ``Kind | None``
    where ``Kind`` subclasses ``base``. The registries of kinds are derived from this, so a
    kind exists exactly when its field does."""
    kinds: dict[str, type[SpecT]] = {}
    for name, info in model.model_fields.items():
        if typing.get_origin(info.annotation) not in (typing.Union, types.UnionType):
            continue
        args = typing.get_args(info.annotation)
        others = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(others) == 1 and isinstance(others[0], type) and issubclass(others[0], base):
            kinds[name] = others[0]
    return kinds


def _one_kind_schema(schema: dict[str, Any], model: type[Any]) -> None:
    """JSON Schema for "exactly one kind": an editor then rejects a step with none or two.

    One branch per kind (or ``use``, a reference to a protection) that holds when that key
    is given a value; ``null`` counts as not given, as it does when the file is loaded.
    """
    alternatives = [(k, "object") for k in model.kinds]
    if "use" in model.model_fields:
        alternatives.append(("use", "string"))
    schema["oneOf"] = [{"required": [key], "properties": {key: {"type": kind}}} for key, kind in alternatives]


class KindModel(Model):
    """A model with exactly one *kind* field set (a step, a rule): ``kinds`` lists them,
    derived from the fields whose type subclasses ``kind_base``."""

    model_config = ConfigDict(json_schema_extra=_one_kind_schema)

    kind_base: ClassVar[type[BaseModel]] = BaseModel
    kind_noun: ClassVar[str] = "kind"  # what errors call one: "a step needs exactly one of ..."
    kinds: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.kinds = tuple(kind_fields(cls, cls.kind_base))

    @property
    def kind(self) -> str:
        return one_of(self, self.kinds, self.kind_noun)


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


class BundleSpec(Model):
    """Which folder a file's bundle packs (``bundle:`` in either config file)."""

    root: str = Field(
        default=".",
        description="Folder packed into the bundle, relative to this file's folder; `..` takes in shared "
        "modules next to it. Inside a git work tree: tracked and untracked-but-not-ignored files; "
        "otherwise every file but those a `.prodlineignore` names.",
    )
