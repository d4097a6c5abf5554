"""``{{ name }}`` templating for steps and rules.

Deliberately tiny: values are substituted, nothing is evaluated, so a config
file cannot run code inside the worker. Names are dotted (``params.image``,
``args.service``) and an unknown name is an error, both at validate time and
at run time, rather than silently rendering as an empty string.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

_FIELD = re.compile(r"\{\{\s*([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)\s*\}\}")

# Names every release provides, whatever the config says.
BUILTIN_NAMES = ("application", "service", "version", "environment", "release")


def outputs_prefix(step: str) -> str:
    """Later steps read an earlier step's outputs as ``{{ steps.NAME.outputs.KEY }}``."""
    return f"steps.{step}.outputs."


class TemplateError(ValueError):
    """A template refers to a name the release does not provide."""


def names_in(text: str) -> list[str]:
    """The template names used in ``text``."""
    return _FIELD.findall(text)


def strings_in(value: Any) -> Iterable[str]:
    """Every string inside nested dicts and lists (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def unknown_names(value: Any, known: Iterable[str], prefixes: Iterable[str] = ()) -> list[str]:
    """Names used in ``value`` that are neither ``known`` nor start with one of ``prefixes``."""
    known_set, starts = set(known), tuple(prefixes)
    return sorted(
        {
            n
            for text in strings_in(value)
            for n in names_in(text)
            if n not in known_set and not (starts and n.startswith(starts))
        }
    )


# The first part of every name prodline provides. Manifests may hold other tools' templates
# (Argo Rollouts' `{{args.service-name}}` in an AnalysisTemplate): those are left for them.
PRODLINE_ROOTS = frozenset((*BUILTIN_NAMES, "params", "steps"))


def render(text: str, context: Mapping[str, str], *, foreign_ok: bool = False) -> str:
    """Substitute ``{{ name }}`` fields; raise :class:`TemplateError` on unknown names. With
    ``foreign_ok``, names that are not prodline's at all (another tool's) are left as they are."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        root = name.split(".")[0]
        if foreign_ok and root not in PRODLINE_ROOTS:
            close = difflib.get_close_matches(root, PRODLINE_ROOTS, n=1, cutoff=0.8)
            if not close:
                return match.group(0)
            # `{{ param.image }}` is a typo of ours, not another tool's template.
            raise TemplateError(f"unknown template name {{{{ {name} }}}}; did you mean {close[0]}?")
        if name not in context:
            raise TemplateError(f"unknown template name {{{{ {name} }}}}; known: {', '.join(sorted(context))}")
        return str(context[name])

    return _FIELD.sub(substitute, text)


def render_all(value: Any, context: Mapping[str, str]) -> Any:
    """Render every string inside nested dicts and lists."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, Mapping):
        return {render(str(k), context): render_all(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_all(item, context) for item in value]
    return value
