"""The group committer's idle flushers: a request arriving while several wait for work wakes one of them.
Each arrival used to wake them all (an ``asyncio.Event``), and every flusher but the first found nothing
left to take and went back to waiting: a task, a timer and a future per flusher per request."""

from __future__ import annotations

import asyncio
from typing import Any

from producers.adapters.service import _GroupCommitter


async def test_an_arrival_wakes_one_waiting_flusher() -> None:
    committer = _GroupCommitter(service=None)  # type: ignore[arg-type]  # only its waiting is exercised
    waiting = [asyncio.create_task(committer._next_arrival()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert len(committer.idle) == 3 and not any(t.done() for t in waiting)

    unit: Any = object()
    committer.pending.append(unit)
    assert committer._wake_one()
    await asyncio.sleep(0.01)
    woken = [t for t in waiting if t.done()]
    assert len(woken) == 1 and woken[0].result() is True, "one flusher takes the request"
    assert len(committer.idle) == 2, "the others still wait, none woken for nothing"

    committer.pending.clear()  # the woken flusher took it
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert not committer._wake_one(), "a cancelled flusher is not woken"


async def test_a_flusher_stops_waiting_at_its_deadline(monkeypatch: Any) -> None:
    monkeypatch.setattr(_GroupCommitter, "IDLE_S", 0.01)
    committer = _GroupCommitter(service=None)  # type: ignore[arg-type]
    assert await committer._next_arrival() is False
    assert not committer._wake_one(), "nobody is waiting once its deadline passed"
