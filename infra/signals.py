"""SIGTERM in a service process, from its first moment to its last (``hub run …``).

Python's default for SIGTERM ends a process as killed (exit -15). ``infra.runner.serve`` hands SIGTERM to
its event loop, but only once the service's modules are loaded (seconds on a busy machine), and gives it
back when the loop is done; a process manager may stop the service in either window. ``exit_on_sigterm``
covers both: installed by the ``hub`` command before it loads anything, it ends the process at once with
the status it has so far — 0 (nothing serves yet, or all of it was stopped) unless ``failing`` said
otherwise. At once: ``os._exit``, not ``SystemExit``, which an exiting interpreter may swallow while it
waits for a thread that never ends. Nothing is lost: before the services start nothing is in flight, and
after they stopped their work is committed and their connections closed.

Nothing here may import more than the standard library: it runs before anything slow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

_status = 0


def _exit(_signum: int, _frame: FrameType | None) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_status)


def exit_on_sigterm() -> None:
    """From now on (until ``infra.runner.serve`` takes SIGTERM over, and again after), SIGTERM ends the
    process with the status it has so far."""
    signal.signal(signal.SIGTERM, _exit)


def failing(status: int) -> None:
    """The process is ending because something failed: a SIGTERM from now on ends it with ``status``."""
    global _status
    _status = status
