"""Read YAML while remembering where every value came from.

PyYAML's safe loader throws line numbers away and silently keeps the last of
two duplicate keys. Config errors must point at ``file:line``, and a duplicated
key is almost always a mistake, so we compose the node tree ourselves and
build plain Python values next to a map from value path to line number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, Problem

PathKey = tuple[str | int, ...]


@dataclass
class Document:
    """A parsed YAML file: its values and the line of every value in it."""

    path: Path
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    size: int = 0

    def line_of(self, loc: PathKey) -> int:
        """Line of the deepest known value on ``loc`` (1 when nothing matches)."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1

    def problem(self, loc: PathKey, message: str, hint: str = "") -> Problem:
        return Problem(str(self.path), self.line_of(loc), loc, message, hint)


_scalars = yaml.SafeLoader("")


# Config files are small; a file that expands past this many values (YAML aliases
# can multiply, as in the "billion laughs") is refused instead of exhausting memory.
MAX_VALUES = 200_000


class _TooLarge(Exception):
    pass


def _build(node: yaml.Node, path: PathKey, doc: Document, problems: list[Problem]) -> Any:
    doc.size += 1
    if doc.size > MAX_VALUES:
        raise _TooLarge
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalars.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                problems.append(Problem(str(doc.path), key_node.start_mark.line + 1, path, "keys must be plain text"))
                continue
            key = str(key)
            if key in result:
                problems.append(
                    Problem(
                        str(doc.path),
                        key_node.start_mark.line + 1,
                        (*path, key),
                        f"duplicate key {key!r}",
                        "remove one of the two; YAML would silently keep only the last",
                    )
                )
                continue
            doc.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _build(value_node, (*path, key), doc, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, problems) for i, item in enumerate(node.value)]
    value = _scalars.construct_object(node)
    # Dates and binary blobs have no meaning in prodline configs: keep the text.
    if not isinstance(value, (str, int, float, bool, type(None))):
        value = node.value
    return value


def parse_yaml(text: str, path: Path) -> Document:
    """Parse one YAML document, raising :class:`ConfigError` with locations."""
    doc = Document(path=path, data=None)
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([Problem(str(path), line, (), f"invalid YAML: {exc.problem or exc}", "")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(str(path), 1, (), f"invalid YAML: {exc}", "")]) from None
    except RecursionError:
        raise ConfigError([Problem(str(path), 1, (), "invalid YAML: nested too deeply", "")]) from None
    if len(nodes) != 1 or nodes[0] is None:
        what = "is empty" if not nodes or nodes[0] is None else "holds several documents"
        raise ConfigError(
            [Problem(str(path), 1, (), f"the file {what}", "put exactly one application or service in each file")]
        )
    problems: list[Problem] = []
    try:
        doc.data = _build(nodes[0], (), doc, problems)
    except RecursionError:
        raise ConfigError([Problem(str(path), 1, (), "invalid YAML: nested too deeply", "")]) from None
    except _TooLarge:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    1,
                    (),
                    f"the file expands to more than {MAX_VALUES} values",
                    "check its YAML aliases (*name)",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:  # e.g. anchors that construct badly
        raise ConfigError([Problem(str(path), 1, (), f"invalid YAML: {exc}", "")]) from None
    if problems:
        raise ConfigError(problems)
    return doc


def read_yaml(path: Path) -> Document:
    """Read and parse a YAML file, turning I/O failures into config errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), 0, (), "file not found", "check the path")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), 0, (), f"cannot read the file: {exc}", "")]) from None
    return parse_yaml(text, path)
