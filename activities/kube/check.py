"""Offline checks of a service's Kubernetes steps, for ``prodline validate`` and ``release start``.

What can be known without a cluster or a release is checked before anything is packed or sent:
the manifests exist inside the service's folder and parse, every object is named, each
``images:`` entry names a container the manifests have, each patch finds its object, and a
``kubernetes`` step holds no canary that waits to be promoted. Templates are not rendered
(the version and outputs are not known yet); the worker checks them again at plan time, with
the same functions, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prodline.config.errors import Problem
from prodline.config.service import Service
from prodline.config.steps import KubernetesStep, Step
from prodline.config.yamlsource import Document

from .canary import is_indefinite_pause
from .manifests import ManifestError, apply_overrides, load_manifests, object_key


def held_canary(objs: Sequence[dict[str, Any]]) -> str:
    """Why a ``kubernetes`` step cannot deploy these objects ("" if it can): a Rollout whose canary
    waits at ``pause: {}`` steps for a promote nobody would send would count as deployed at once."""
    for obj in objs:
        if obj.get("kind") != "Rollout" or not str(obj.get("apiVersion", "")).startswith("argoproj.io/"):
            continue
        steps = (((obj.get("spec") or {}).get("strategy") or {}).get("canary") or {}).get("steps") or []
        pauses = [i for i, step in enumerate(steps) if is_indefinite_pause(step)]
        if pauses:
            return (
                f"{object_key(obj)} has {len(pauses)} canary `pause: {{}}` step(s) "
                f"(steps[{pauses[0]}] first), which wait to be promoted: a kubernetes step would report it "
                "deployed while it waits at the first; use a `rollout` step, whose pauses prodline drives "
                "(or give each pause a duration)"
            )
    return ""


def step_problem(step: Step, folder: Path) -> str:
    """What is wrong with one step's manifests and overrides, offline ("" when nothing is)."""
    spec = step.spec
    if not isinstance(spec, KubernetesStep):
        return ""
    try:
        manifests = load_manifests(spec.manifests, folder)
        # Image values are templates until the release renders them: only the names count here.
        manifests = apply_overrides(
            manifests, images={name: "image" for name in spec.images}, replicas=None, patches=spec.patches
        )
    except ManifestError as exc:
        return str(exc)
    return "" if spec.drives_pauses else held_canary([m.obj for m in manifests])


def manifest_problems(service: Service, doc: Document, steps_by_environment: dict[str, list[Step]]) -> list[Problem]:
    """Problems of every Kubernetes step, as written and with each environment's overrides."""
    folder = Path(doc.path).parent
    problems: dict[str, Problem] = {}
    index = {step.name: i for i, step in enumerate(service.steps)}
    for environment, steps in {"": service.steps, **steps_by_environment}.items():
        for step in steps:
            message = step_problem(step, folder)
            if message and message not in problems:
                where = f" (in {environment}, with its overrides)" if environment else ""
                field = next((f for f in ("images", "patches") if message.startswith(f)), "manifests")
                problems[message] = doc.problem(
                    ("steps", index[step.name], step.kind, field),
                    message + where,
                    "",
                )
    return list(problems.values())
