"""The patch algorithms of the fake API server: server-side apply, JSON merge patch, JSON patch.

All functions are pure: they take plain JSON values and return new ones, never changing
their arguments.

* :func:`apply_config` is a simplified server-side apply for ONE field manager: the fields
  this manager applied last time and no longer applies are removed from the live object,
  then the new configuration is deep-merged over it. Maps merge key by key; lists (even
  the ones Kubernetes merges by key, such as ``containers`` by ``name``) are replaced whole;
  a ``null`` removes the field. Unlike the real structured-merge-diff, a field another
  manager also set is still removed when this one drops it.
* :func:`merge_patch` is RFC 7386 (``application/merge-patch+json``). The server also uses
  it for ``application/strategic-merge-patch+json``: without the Go structs' patch
  strategies a strategic patch of a keyed list (``containers``) replaces the list instead
  of merging the entries, and ``$patch``/``$retainKeys`` directives are not understood.
* :func:`json_patch` is RFC 6902 (``application/json-patch+json``): add, remove, replace,
  move, copy, test.
"""

from __future__ import annotations

import copy
from typing import Any

Json = Any
Path = tuple[str, ...]


class PatchError(ValueError):
    """A patch that cannot be applied (the server answers 422 or 400)."""


def leaf_paths(config: Json, prefix: Path = ()) -> set[Path]:
    """The paths of every non-map value in ``config`` (lists and scalars are leaves; an empty map is one too)."""
    if isinstance(config, dict) and config:
        paths: set[Path] = set()
        for key, value in config.items():
            paths |= leaf_paths(value, (*prefix, str(key)))
        return paths
    return {prefix}


def _covers(paths: set[Path], path: Path) -> bool:
    """Whether ``path`` or one of its ancestors is in ``paths`` (then the new config still sets it)."""
    return any(path[:i] in paths for i in range(1, len(path) + 1))


def _remove(obj: dict[str, Any], path: Path, keep: set[Path]) -> None:
    """Delete ``path`` from ``obj`` and the maps it leaves empty, unless the new config still names them."""
    parents: list[tuple[dict[str, Any], str]] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        parents.append((node, key))
        node = node[key]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    # Walk back up: a map emptied by the removal goes too (as structured-merge-diff does).
    for depth in range(len(parents) - 1, -1, -1):
        parent, key = parents[depth]
        child_path = path[: depth + 1]
        if parent.get(key) == {} and child_path not in keep and not _descendant_kept(keep, child_path):
            parent.pop(key)
        else:
            break


def _descendant_kept(keep: set[Path], path: Path) -> bool:
    return any(p[: len(path)] == path for p in keep)


def deep_merge(base: Json, overlay: Json) -> Json:
    """``overlay`` over ``base``: maps merge recursively, everything else (lists too) replaces; None removes."""
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        return copy.deepcopy(overlay)
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def apply_config(live: dict[str, Any], previous: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply of ``config`` by a manager whose last applied configuration was ``previous``."""
    result = copy.deepcopy(live)
    if previous:
        keep = leaf_paths(config)
        for path in sorted(leaf_paths(previous) - keep, key=len, reverse=True):
            if path and not _covers(keep, path):
                _remove(result, path, keep)
    return deep_merge(result, config)


def merge_patch(target: Json, patch: Json) -> Json:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Json, parts: list[str]) -> Json:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise PatchError(f"path /{'/'.join(parts)} does not exist")
    return node


def _get(doc: Json, parts: list[str]) -> Json:
    if not parts:
        return doc
    parent = _parent(doc, parts)
    key = parts[-1]
    try:
        return parent[int(key)] if isinstance(parent, list) else parent[key]
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise PatchError(f"path /{'/'.join(parts)} does not exist") from exc


def _add(doc: Json, parts: list[str], value: Json) -> Json:
    if not parts:
        return value
    parent = _parent(doc, parts)
    key = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if key == "-" else int(key)
        if not 0 <= index <= len(parent):
            raise PatchError(f"index {key} is out of range")
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise PatchError(f"path /{'/'.join(parts)} does not exist")
    return doc


def _delete(doc: Json, parts: list[str]) -> Json:
    _get(doc, parts)  # raises when missing
    parent = _parent(doc, parts)
    if isinstance(parent, list):
        del parent[int(parts[-1])]
    else:
        del parent[parts[-1]]
    return doc


def json_patch(target: Json, operations: Json) -> Json:
    """RFC 6902 JSON patch; raises :class:`PatchError` on a bad operation or a failed ``test``."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"bad JSON patch operation {op!r}")
        parts = _pointer(op["path"])
        kind = op["op"]
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _delete(doc, parts)
        elif kind == "replace":
            doc = _delete(doc, parts) if parts else doc
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                doc = _delete(doc, source)
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _get(doc, parts) != op.get("value"):
                raise PatchError(f"test operation failed at {op['path']}")
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}")
    return doc
