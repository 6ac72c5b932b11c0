"""The cyclic garbage collector: one policy for the hub's hot paths, set here and nowhere else.

Reference counting frees nearly everything the hub allocates the moment it is no longer used; the cyclic
collector exists for reference cycles only. Yet CPython runs it after every 700 net allocations of
container objects, and each pass traverses every live container of the generations it collects. On the
hub's hot paths that is work for nothing, measured:

- a consumer (``consumers.runtime``) allocates a few containers per record (the client's record and
  headers, the event, its row), freed when their batch commits: passes every few hundred records
  traversed the batches in flight again and again, ~10% of the consumer's CPU;
- a CSV import (``producers.adapters.service``) keeps two chunks of rows alive (one preparing, one
  committing), a few dozen objects a row: 40 µs of the ~140 µs of CPU a row cost (``hub import`` of
  10,000 rows);
- a feed build (``consumers.feed.builder``) holds a month's rows and the facts made from them, millions
  of objects that live until it ends: reading the month took 3 s without passes and 7-9 s with.

So:

- ``fewer_collections()`` around streaming work (a consumer's run, an import, an HTTP service serving
  requests: ``infra.http.create_app``): the first generation's
  threshold is 50,000 net allocations, the second's 20, while any such work runs. A pass still comes
  every 50,000 allocations, so cyclic garbage stays bounded; the process's own thresholds are back when
  the last such work ends.
- ``paused()`` around bounded work that holds millions of live objects until it ends (a feed build): no
  passes at all. Even at 50,000 the older generations' passes traverse the growing live set (2M rows
  and their facts: 3.3-4.5 s of CPU against 2.3-2.5 s paused and 5.7-6.5 s at the default). What the work
  allocates is freed by reference counting when it ends, so the pause costs no memory.
- ``freeze_what_lives()`` once a service is built: modules, routes, models and pools live as long as the
  process, so they leave the collector's sight and no pass rescans them.

Work overlaps (two imports at once, a build while a consumer runs, builds in worker threads), so each
setting counts who is inside: the first to enter changes it, the last to leave restores it.
"""

from __future__ import annotations

import functools
import gc
import inspect
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

THRESHOLD = 50_000  # the first generation's, while streaming work runs
OLDER_THRESHOLD = 20  # the second generation's: one of its passes for 20 of the first's

_lock = threading.Lock()
_streaming = 0  # fewer_collections() entered and not left
_saved_threshold = gc.get_threshold()
_pausing = 0  # paused() entered and not left
_was_enabled = True

F = TypeVar("F", bound=Callable[..., Any])


class _Setting:
    """A collector setting held while work runs: ``with setting:`` or, on a function (a coroutine
    function too), as a decorator."""

    def _enter(self) -> None:
        raise NotImplementedError

    def _leave(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> None:
        with _lock:
            self._enter()

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        with _lock:
            self._leave()

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def held_while_awaited(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return held_while_awaited  # type: ignore[return-value]

        @functools.wraps(func)
        def held(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return held  # type: ignore[return-value]


class _FewerCollections(_Setting):
    def _enter(self) -> None:
        global _streaming, _saved_threshold
        if _streaming == 0:
            _saved_threshold = gc.get_threshold()
            gc.set_threshold(THRESHOLD, OLDER_THRESHOLD, _saved_threshold[2])
        _streaming += 1

    def _leave(self) -> None:
        global _streaming
        _streaming -= 1
        if _streaming == 0:
            gc.set_threshold(*_saved_threshold)


class _Paused(_Setting):
    def _enter(self) -> None:
        global _pausing, _was_enabled
        if _pausing == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pausing += 1

    def _leave(self) -> None:
        global _pausing
        _pausing -= 1
        if _pausing == 0 and _was_enabled:
            gc.enable()


def fewer_collections() -> _Setting:
    """The collector passes every 50,000 net allocations while streaming work runs (module docstring)."""
    return _FewerCollections()


def paused() -> _Setting:
    """No collector passes while bounded work holding millions of live objects runs (module docstring)."""
    return _Paused()


def freeze_what_lives() -> None:
    """Everything alive now lives as long as the process: out of the collector's sight (module docstring).
    Collected first, so no garbage is frozen with it."""
    gc.collect()
    gc.freeze()
