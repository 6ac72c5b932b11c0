"""The next revision reads a kept body with its tables made from the cells kept beside it
(``builder.read_kept``, migration 067), not parsed from the body's text: it must be what ``orjson.loads``
gives the body, cell for cell (keys, values, reasons), for every layout, count, threshold and revision;
and a body without such cells, or with cells that are not its layout's, is parsed as it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.feed import builder
from domain.feed import FeedCounts, Job
from tests.unit import feed_golden_data as g
from tests.unit.feed_strategies import months

HORIZON = datetime(2025, 11, 5, 15, 0, 0, 123456, tzinfo=UTC).isoformat()


def _as_loaded(value: Any) -> Any:
    """``value`` with its tuples as lists (as JSON reads them back)."""
    if isinstance(value, dict):
        return {k: _as_loaded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_loaded(v) for v in value]
    return value


def _read_as_loaded(kept: Sequence[builder._Kept]) -> None:
    for k in kept:
        assert k.cells is not None
        read = builder.read_kept(k.body, k.cells)
        loaded = orjson.loads(k.body)
        assert list(read) == list(loaded)  # the body's keys in its order
        assert _as_loaded(read) == loaded
        # the tables made from the cells (tuples), not parsed from the body (lists)
        tables = [t for ts in read["populations"].values() for t in ts]
        assert tables and all(type(c) is tuple for t in tables for c in t["cells"])
        assert builder.read_kept(k.body.decode(), k.cells.encode()) == read
        assert builder.read_kept(k.body) == loaded


def _composed(work: Sequence[builder._Work], threshold: int) -> list[builder._Kept]:
    kept = builder._kept(work, threshold=threshold, horizon=HORIZON)
    _read_as_loaded(kept)
    return kept


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(months(), st.integers(1, 5))
def test_fuzz_a_body_read_with_its_cells_is_the_body_parsed(
    months: tuple[FeedCounts, FeedCounts], threshold: int
) -> None:
    first, late = months
    targets = g.targets(first.authority, first.sites)
    [one] = _composed([builder._Work(Job(first, None, targets), None, 1)], threshold)
    second = replace(g.plus(first, late), sites=late.sites)
    # revision 2 read from revision 1's body and cells, revision 3 from revision 2's
    [two] = _composed([builder._Work(Job(second, None, targets), one.body, 2, one.cells)], threshold)
    _composed([builder._Work(Job(second, None, targets), two.body, 3, two.cells)], threshold)
    # the same revision as composed from the body parsed in full
    [parsed] = builder._kept([builder._Work(Job(second, None, targets), one.body, 2)], threshold=threshold,
                             horizon=HORIZON)  # fmt: skip
    assert parsed == two


def test_bodies_of_a_national_like_month_read_with_their_cells_are_the_bodies_parsed() -> None:
    feeds = g.month_counts(60, 7)
    sites = dict(g.authorities(60))
    work = [builder._Work(Job(f, None, g.targets(a, sites[a])), None, 1) for a, f in sorted(feeds.items())]
    ones = _composed(work, 3)
    late = g.month_counts(60, 8, scale=0.1)
    jobs = [Job(g.plus(f, late[a]), None, g.targets(a, sites[a])) for a, f in sorted(feeds.items())]
    twos = _composed([builder._Work(j, k.body, 2, k.cells) for j, k in zip(jobs, ones, strict=True)], 3)
    assert twos == builder._kept(
        [builder._Work(j, k.body, 2) for j, k in zip(jobs, ones, strict=True)], threshold=3, horizon=HORIZON
    )
    # layouts of one, two and three sites; hidden cells of each reason read back
    texts = "".join(k.cells or "" for k in ones + twos)
    for reason in (
        '"primary"',
        '"complementary"',
        '"previous_revision"',
        '"changed_since_previous_revision"',
    ):
        assert reason in texts
    assert len({len(orjson.loads(k.body)["layout"]) for k in ones}) >= 3


def test_cells_that_are_not_the_bodys_layouts_are_not_used() -> None:
    """Cells of another layout (a site more), of another number of populations or cells, or a body
    without its layout (kept before layouts were fixed): the body is parsed as it is."""
    feeds = g.month_counts(60, 7)
    sites = dict(g.authorities(60))
    by_sites: dict[int, builder._Kept] = {}
    for a, f in sorted(feeds.items()):
        [k] = builder._kept([builder._Work(Job(f, None, g.targets(a, sites[a])), None, 1)], threshold=3,
                            horizon=HORIZON)  # fmt: skip
        by_sites.setdefault(len(orjson.loads(k.body)["layout"]), k)
    one, two = by_sites[1], by_sites[2]
    assert one.cells is not None and two.cells is not None
    kept = orjson.loads(one.cells)
    for cells in (
        two.cells,  # another layout's
        orjson.dumps(kept[:-1]),  # a population less
        orjson.dumps([[v[:-1], r[:-1]] for v, r in kept]),  # a cell less in each
    ):
        read = builder.read_kept(one.body, cells)
        assert read == orjson.loads(one.body)
        assert all(type(c) is list for ts in read["populations"].values() for t in ts for c in t["cells"])
    body = orjson.loads(one.body)
    del body["layout"]
    assert builder.read_kept(orjson.dumps(body), one.cells) == body
