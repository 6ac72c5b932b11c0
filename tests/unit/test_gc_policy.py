"""The cyclic collector's one policy (``infra.gc``): each setting held while its work runs, counted
across overlapping work, and the process's own setting back after the last, on every path."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from infra.gc import OLDER_THRESHOLD, THRESHOLD, fewer_collections, freeze_what_lives, paused


@pytest.fixture(autouse=True)
def process_setting() -> Iterator[None]:
    before, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(700, 10, 10)
    gc.enable()
    yield
    gc.set_threshold(*before)
    (gc.enable if enabled else gc.disable)()


def test_streaming_work_raises_the_threshold_until_the_last_ends() -> None:
    with fewer_collections():
        assert gc.get_threshold() == (THRESHOLD, OLDER_THRESHOLD, 10)
        with fewer_collections():  # a second import at the same time
            pass
        assert gc.get_threshold() == (THRESHOLD, OLDER_THRESHOLD, 10), "the first still runs"
    assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("an import that fails")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_coroutine_function_holds_the_setting_while_it_runs_not_while_it_is_made() -> None:
    seen: list[tuple[int, int, int]] = []

    @fewer_collections()
    async def run() -> str:
        await asyncio.sleep(0)
        seen.append(gc.get_threshold())
        return "done"

    coroutine = run()
    assert gc.get_threshold() == (700, 10, 10), "made, not yet running"
    assert asyncio.run(coroutine) == "done"
    assert seen == [(THRESHOLD, OLDER_THRESHOLD, 10)]
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_pauses_resume_only_after_the_last() -> None:
    """Two builds overlapping on one event loop: the first to end must not resume the collector while
    the second still holds its rows (each saving and restoring ``isenabled()`` on its own did)."""

    async def build(started: asyncio.Event, other: asyncio.Event) -> list[bool]:
        with paused():
            started.set()
            await other.wait()
            await asyncio.sleep(0)
            return [gc.isenabled()]

    async def both() -> list[list[bool]]:
        a, b = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(build(a, b))
        await a.wait()
        with paused():  # the second build starts while the first runs, and outlives it
            b.set()
            done = await first
            assert not gc.isenabled(), "the second build still runs"
        return [done]

    assert asyncio.run(both()) == [[False]]
    assert gc.isenabled()
    gc.disable()  # a process that had the collector off keeps it off
    with paused():
        pass
    assert not gc.isenabled()


def test_what_lives_is_frozen() -> None:
    before = gc.get_freeze_count()
    try:
        kept = [object() for _ in range(10)]
        freeze_what_lives()
        assert gc.get_freeze_count() >= before + len(kept)
    finally:
        gc.unfreeze()


def test_feed_records_are_checked_and_written_with_the_collector_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Publishing a chunk of kept feed bodies makes thousands of short-lived containers a body; the
    collector's passes over them were a third of the publishing's CPU (``builder._encoded``)."""
    from consumers.feed import builder

    seen: list[bool] = []
    monkeypatch.setattr(builder, "encode_feed_revision", lambda body, at: seen.append(gc.isenabled()))
    builder._encoded([("{}", None), ("{}", None)])  # type: ignore[list-item]
    assert seen == [False, False]
    assert gc.isenabled()
