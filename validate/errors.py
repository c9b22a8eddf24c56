"""Errors for bad user input, and the exit-code contract.

Every problem a user can fix (a protocol key, a manifest row, a predictions column) is raised as an
:class:`InputError` that names where it is (file, YAML line or CSV row, field) and what was expected.
The CLI prints these as one line each and exits with code 2; it never shows a traceback for them.

Exit codes (DESIGN.md): 0 every gate passes, 1 a gate failed, 2 bad input (the user can fix a file or
a flag), 3 the run could not complete (environment or internal error: one line on stderr, the
traceback in a log file). A crash must never read as "a gate failed" (1) nor as a pass (0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3


class RunIncomplete(Exception):
    """The run could not complete for a reason outside the user's files (exit 3).

    Raised where the cause is known and can be said in one line (a full disk, a read-only output
    folder, code that tried to end the process); anything unexpected is reported the same way by the CLI.
    """


class InputError(Exception):
    """A problem with user input, located precisely enough to fix.

    ``line`` is a 1-based line of a text file (YAML), ``row`` a 1-based data row of a table
    (the header is not counted, so row 1 is the first case).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
        expected: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.row = row
        self.field = field
        self.expected = expected

    def location(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.location()
        text = f"{where}: " if where else ""
        if self.field:
            text += f"{self.field}: "
        text += self.message
        if self.expected:
            text += f" (expected {self.expected})"
        return text


class InputErrors(InputError):
    """Several input problems found in one pass, reported together."""

    def __init__(self, problems: list[InputError]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s)")

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass
class ProblemCollector:
    """Collects problems so that a check reports all of them at once instead of the first."""

    problems: list[InputError]

    def __init__(self):
        self.problems = []

    def add(self, error: InputError) -> None:
        if isinstance(error, InputErrors):
            self.problems.extend(error.problems)
        else:
            self.problems.append(error)

    def raise_if_any(self) -> None:
        if len(self.problems) == 1:
            raise self.problems[0]
        if self.problems:
            raise InputErrors(self.problems)
