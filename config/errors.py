"""Config errors that name the file, the line, the field and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prodline.errors import InvalidInput


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file."""

    file: str
    line: int
    loc: tuple[str | int, ...]
    message: str
    hint: str = ""

    @property
    def field(self) -> str:
        """Dotted field path as a user would type it: ``environments[1].name``."""
        out = ""
        for part in self.loc:
            if part == "[key]":  # pydantic's marker for "the key itself"
                continue
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.loc else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}:{field} {self.message}{hint}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["loc"] = list(self.loc)
        data["field"] = self.field
        return data


class ConfigError(InvalidInput):
    """One or more problems found while loading config files (nothing was started: exit code 2)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
