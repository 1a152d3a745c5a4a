"""Input problems found while reading results: one line each, naming the file (and line) and the fix.

Readers never raise on bad data. They record a :class:`Problem`, skip what they cannot use, and carry on, so
a page still renders from everything that was readable and shows the problems at its top.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: At most this many problems are kept per file; the rest are folded into one summary line.
MAX_PER_FILE = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input file.

    Attributes:
        path: the file, as given (relative paths stay relative so messages are short).
        line: 1-based line number for JSONL files, or None when the problem concerns the whole file.
        message: what is wrong.
        fix: what the user should do about it.
    """

    path: str
    line: int | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message} — {self.fix}"


class ProblemLog:
    """Collects problems for one page, capping how many lines one file may contribute."""

    def __init__(self) -> None:
        self._items: list[Problem] = []
        self._per_file: dict[str, int] = {}

    def add(self, path: Path | str, line: int | None, message: str, fix: str) -> None:
        key = str(path)
        n = self._per_file.get(key, 0) + 1
        self._per_file[key] = n
        if n <= MAX_PER_FILE:
            self._items.append(Problem(key, line, message, fix))

    def extend(self, problems: list[Problem]) -> None:
        for p in problems:
            self.add(p.path, p.line, p.message, p.fix)

    @property
    def items(self) -> list[Problem]:
        """The kept problems, followed by one summary line per file that had more than :data:`MAX_PER_FILE`."""
        extra = [
            Problem(
                path, None, f"{n - MAX_PER_FILE} more problems in this file are not listed", "fix the ones above first"
            )
            for path, n in self._per_file.items()
            if n > MAX_PER_FILE
        ]
        return self._items + extra

    def __len__(self) -> int:
        return sum(self._per_file.values())
