"""What changed between two revisions of an application, in lines a reviewer reads.

``prodline app apply`` records these with each revision, and ``app show`` and
``app history`` print them: "production: precondition approval removed" says at a
glance what `app diff` would show at length. Pure functions of two models (no
file, no clock), so the application workflow computes them itself.

Rules are matched by label (their ``name``, else the protection they use, else
their kind); a second rule with the same label in one list is ``label#2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from .application import Application, Environment
from .release import BundleRef
from .rules import RuleRef

__all__ = ["bundle_changes", "summarise"]

# Values shown in a line only when short: the line is a summary, `app diff` has the rest.
_SHORT = 40


def summarise(before: Application | None, after: Application) -> list[str]:
    """What ``after`` changes from ``before`` (None: ``after`` is the first revision)."""
    if before is None:
        names = ", ".join(after.environment_names)
        return [f"first revision: environments {names}"]
    lines: list[str] = []
    if before.description != after.description:
        lines.append("description changed")
    if before.services != after.services:
        was = ", ".join(before.services) if before.services is not None else "any"
        now = ", ".join(after.services) if after.services is not None else "any"
        lines.append(f"services changed: {was} -> {now}")
    if before.bundle != after.bundle:
        lines.append(f"bundle root changed: {before.bundle.root} -> {after.bundle.root}")
    old, new = before.environment_names, after.environment_names
    for i, name in enumerate(new):
        if name not in old:
            where = f"after {new[i - 1]}" if i else "first"
            lines.append(f"environment {name} added ({where})")
    lines += [f"environment {name} removed" for name in old if name not in new]
    kept_old, kept_new = [n for n in old if n in new], [n for n in new if n in old]
    if kept_old != kept_new:
        lines.append(f"environments reordered: {', '.join(kept_old)} -> {', '.join(kept_new)}")
    for name in kept_new:
        was, now = before.environment(name), after.environment(name)
        assert was is not None and now is not None
        lines += _environment(was, now)
    lines += _keyed("protection", before.protections, after.protections)
    return lines


def bundle_changes(before: BundleRef | None, after: BundleRef | None) -> list[str]:
    """The files the rules run: a new bundle digest is a change even when the config is the same."""
    if before == after or (before and after and before.digest == after.digest):
        return []
    if after is None:
        return ["bundle removed"]
    if before is None:
        return [f"bundle added ({after.short})"]
    return [f"bundle changed: {before.short} -> {after.short}"]


def _environment(before: Environment, after: Environment) -> list[str]:
    name = after.name
    lines = []
    if before.task_queue != after.task_queue:
        was, now = before.task_queue or "(control queue)", after.task_queue or "(control queue)"
        lines.append(f"{name}: task_queue changed: {was} -> {now}")
    lines += [f"{name}: env {key} added" for key in after.env if key not in before.env]
    lines += [f"{name}: env {key} removed" for key in before.env if key not in after.env]
    for key, value in after.env.items():
        old = before.env.get(key)
        if old is not None and old != value:
            shown = f" ({old} -> {value})" if len(old) + len(value) <= _SHORT else ""
            lines.append(f"{name}: env {key} changed{shown}")
    lines += _rules(name, "precondition", before.preconditions, after.preconditions)
    lines += _rules(name, "check", before.checks, after.checks)
    return lines


def _rules(environment: str, noun: str, before: Sequence[RuleRef], after: Sequence[RuleRef]) -> list[str]:
    was, now = _by_label(before), _by_label(after)
    lines = [f"{environment}: {noun} {label} added" for label in now if label not in was]
    lines += [f"{environment}: {noun} {label} removed" for label in was if label not in now]
    for label, rule in now.items():
        old = was.get(label)
        if old is not None and old != rule:
            lines.append(f"{environment}: {noun} {label} changed: {_what_changed(old, rule)}")
    kept_old, kept_new = [k for k in was if k in now], [k for k in now if k in was]
    if kept_old != kept_new:
        lines.append(f"{environment}: {noun}s reordered: {', '.join(kept_old)} -> {', '.join(kept_new)}")
    return lines


def _keyed(noun: str, before: Mapping[str, BaseModel], after: Mapping[str, BaseModel]) -> list[str]:
    lines = [f"{noun} {key} added" for key in after if key not in before]
    lines += [f"{noun} {key} removed" for key in before if key not in after]
    for key, value in after.items():
        old = before.get(key)
        if old is not None and old != value:
            lines.append(f"{noun} {key} changed: {_what_changed(old, value)}")
    return lines


def _by_label(rules: Sequence[RuleRef]) -> dict[str, RuleRef]:
    out: dict[str, RuleRef] = {}
    for rule in rules:
        label, n = rule.label, 1
        while label in out:
            n += 1
            label = f"{rule.label}#{n}"
        out[label] = rule
    return out


def _what_changed(before: BaseModel, after: BaseModel) -> str:
    """The YAML keys whose values differ (one level into a rule's kind): ``approval.approvers, timeout``."""
    was_kind, now_kind = _kind(before), _kind(after)
    if was_kind != now_kind:
        return f"{was_kind} -> {now_kind}"
    was, now = _dump(before), _dump(after)
    fields = []
    for key in [*now, *(k for k in was if k not in now)]:
        old, new = was.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and key == was_kind:
            fields += [
                f"{key}.{sub}" for sub in [*new, *(s for s in old if s not in new)] if old.get(sub) != new.get(sub)
            ]
        else:
            fields.append(key)
    return ", ".join(fields)


def _kind(model: BaseModel) -> str:
    """A rule's kind, ``use NAME`` for a reference to a protection."""
    use = getattr(model, "use", None)
    if use:
        return f"use {use}"
    kinds: tuple[str, ...] = getattr(model, "kinds", ())
    return next((k for k in kinds if getattr(model, k, None) is not None), "")


def _dump(model: BaseModel) -> dict[str, Any]:
    # The keys as the file spells them (`for`, `with`); unset kinds left out.
    return {k: v for k, v in model.model_dump(mode="json", by_alias=True).items() if v is not None}
