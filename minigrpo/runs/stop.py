"""Stopping a run on SIGINT (Ctrl-C) or SIGTERM at a safe point.

``minigrpo train`` runs inside ``GracefulStop()``: a signal that arrives while a step is running is noted,
the step finishes, a checkpoint is written (unless that step just wrote one) and the run raises
``errors.Interrupted``, which the command line turns into one line naming the checkpoint to resume from
(exit code 130 for SIGINT, 143 for SIGTERM: 128 + the signal's number, as a shell reports it). A signal
during setup (loading, the anchor's evaluation, before the first step) stops at once; a second signal
while the first is being honoured stops at once too. Either way a checkpoint half written is removed
(``RunFolder.save_checkpoint``), and a run folder made by this run that holds no checkpoint yet is
removed as well (``lm_run``).
"""
from __future__ import annotations

import signal
import threading

from minigrpo.runs.errors import Interrupted

SIGNALS = ("SIGINT", "SIGTERM")


class GracefulStop:
    """Handlers for SIGINT and SIGTERM while a run trains (installed only in the main thread).

    ``in_loop``: set by the training loop while steps run (a signal then waits for the step to end);
    ``requested``: the name of the signal received, or None."""

    def __init__(self):
        self.requested: str | None = None
        self.in_loop = False
        self._saved = {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for name in SIGNALS:
                num = getattr(signal, name, None)
                if num is not None:
                    self._saved[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self.disarm()

    def disarm(self) -> None:
        """Put the previous handlers back (a run on several processes: each would stop alone)."""
        for num, handler in self._saved.items():
            signal.signal(num, handler)
        self._saved = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.in_loop and self.requested is None:
            self.requested = name              # finish the step, checkpoint, then stop
            return
        self.requested = self.requested or name
        raise Interrupted(self.requested)      # in setup, or a second signal: stop now


def exit_code(name: str) -> int:
    """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(getattr(signal, name))
