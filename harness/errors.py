"""The one error type for bad input: it names the file and the field, and the CLI turns it into one line."""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad user input: a data file, a config, a CLI argument, a checkpoint or a results store."""

    def __init__(self, path: str | os.PathLike | None, field: str | None, message: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __reduce__(self):  # a suite's worker processes send it back whole
        return type(self), (self.path, self.field, self.message)

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.path, self.field) if p)
        return f"{where}: {self.message}" if where else self.message


class NotApplicable(Exception):
    """A task that does not apply to a model (e.g. captioning without a decoder): reported, never run."""
