"""The group committer's idle flushers: a request arriving while several wait for work wakes one of them.
Each arrival used to wake them all (an ``asyncio.Event``), and every flusher but the first found nothing
left to take and went back to waiting: a task, a timer and a future per flusher per request.

And how groups are formed: the requests the adapter has already read join the next group, instead of a
second flusher (or the one flusher, at once) taking a group of one while they wait to run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from producers.adapters import service as adapter_service
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


async def test_requests_read_while_a_group_commits_join_the_next_group(monkeypatch: Any) -> None:
    """A group's commit ends in the same turn of the loop as two more requests are read (their tasks are
    ready, not yet run) while a third waits already: the next group takes all three. With two flushers
    the waiting request was committed alone by the second, and one flusher that took what was pending at
    once also committed it alone (groups of 10-12 events under a stream of single events, now 16-19)."""

    @asynccontextmanager
    async def no_connection(_pool: Any) -> AsyncIterator[None]:
        yield None

    monkeypatch.setattr(adapter_service, "generic_plans", no_connection)
    committer = _GroupCommitter(service=SimpleNamespace(pool=None))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    groups: list[int] = []
    first_ends: asyncio.Future[None] = loop.create_future()

    async def flush(_conn: Any, group: list[Any]) -> list[tuple[Any, list[str]]]:
        groups.append(len(group))
        if len(groups) == 1:
            await first_ends
        return [(unit, []) for unit in group]

    monkeypatch.setattr(committer, "_flush", flush)

    def request() -> Any:
        return committer.commit(SimpleNamespace(rows=[None], done=loop.create_future()))

    first = asyncio.create_task(request())
    while not groups:  # the first group is in its commit
        await asyncio.sleep(0)
    waiting = asyncio.create_task(request())
    await asyncio.sleep(0)
    assert len(committer.pending) == 1, "the second request waits for the next group"
    first_ends.set_result(None)
    read_meanwhile = [asyncio.create_task(request()) for _ in range(2)]
    await asyncio.gather(first, waiting, *read_meanwhile)
    assert groups == [1, 3]


async def test_a_request_read_as_the_last_flusher_ends_gets_a_flusher(monkeypatch: Any) -> None:
    """The flusher ends once no request came for ``IDLE_S``; a request whose handler runs in the same turn
    of the loop as that end (its step was ready before the flusher's task could be discarded from
    ``tasks``) found the ended task still counted, started no flusher, and waited for another request
    to come and start one: a lone request went unanswered. Step by step here, no timing."""

    @asynccontextmanager
    async def no_connection(_pool: Any) -> AsyncIterator[None]:
        yield None

    monkeypatch.setattr(adapter_service, "generic_plans", no_connection)
    committer = _GroupCommitter(service=SimpleNamespace(pool=None))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    answered: list[Any] = []

    async def flush(_conn: Any, group: list[Any]) -> list[tuple[Any, list[str]]]:
        answered.extend(group)
        return [(unit, []) for unit in group]

    monkeypatch.setattr(committer, "_flush", flush)

    def request() -> Any:
        return committer.commit(SimpleNamespace(rows=[None], done=loop.create_future()))

    late: list[asyncio.Task[Any]] = []

    async def no_arrival() -> bool:
        # The idle deadline: no request pending. A request's handler is ready to run in this very turn
        # (its step was queued before the flusher's task ends and is discarded).
        if not late:
            late.append(asyncio.ensure_future(request()))
        return False

    monkeypatch.setattr(committer, "_next_arrival", no_arrival)
    first = asyncio.ensure_future(request())
    await first
    while committer.tasks:  # the flusher ends (after it saw nothing pending)
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not (committer.pending and not committer.tasks), "a request waits with no flusher to take it"
    await late[0]
    assert len(answered) == 2
