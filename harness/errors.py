"""The one error type for bad input: it names the file and the field, and the CLI turns it into one line."""

from __future__ import annotations

import os
import signal
import threading


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


class Terminated(BaseException):
    """SIGTERM (what a batch scheduler sends to stop a job), raised in the main thread so that the cleanup a
    Ctrl-C gets runs too. A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int = 15) -> None:
        self.signum = signum
        super().__init__(signum)

    def __reduce__(self):
        return type(self), (self.signum,)

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


def _raise_terminated(signum: int, frame) -> None:
    signal.signal(signum, signal.SIG_IGN)  # once: the cleanup that follows must run to its end
    raise Terminated(signum)


def on_sigterm_raise():
    """Make SIGTERM raise :class:`Terminated` (as Ctrl-C raises KeyboardInterrupt), so that a batch scheduler's
    stop runs the cleanup a Ctrl-C gets; returns the handler to restore, None off the main thread (where Python
    cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_terminated)
    return signal.SIG_DFL if previous is None else previous
