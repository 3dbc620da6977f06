"""User-facing errors.

A :class:`DepthmineError` is a mistake in the user's input or environment (a file that is not a
video, a missing checkpoint, a malformed catalog). Its message names the file and the problem and
says what to do. The CLI prints it without a traceback and exits with status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DepthmineError", "BadInputError", "ConfigError"]


class DepthmineError(Exception):
    """An error the user can fix; ``str(err)`` is the whole message."""

    exit_code = 2


class BadInputError(DepthmineError):
    """An input file that cannot be used: names the file, the problem and the remedy."""

    def __init__(self, path: str | Path | None, problem: str, hint: str | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.hint = hint
        where = f"{self.path}: " if self.path else ""
        super().__init__(where + problem + (f" ({hint})" if hint else ""))

    def __reduce__(self):  # keep pickling (Dask, multiprocessing) faithful
        return (type(self), (self.path, self.problem, self.hint))


class ConfigError(DepthmineError):
    """A configuration value or file that is invalid."""
