"""The compose path's array shortcuts give what their definitions give (issue 14): tables counted for
many feeds at once (``count_many``) are each feed's ``tables_from_counts``; a revision read from the
previous body's tables by position (``revise_published``) is ``revise`` by name; the change summary
compared table by table (``revision_changes``) is ``change_summary`` over every figure. Each on
bench-like feeds and on bodies whose tables do not line up (where the shortcut must not apply)."""

from __future__ import annotations

import copy
import functools
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import disclosure as d
from domain.feed import (
    Job,
    change_summary,
    compose_many,
    figures,
    population_counts,
    population_tables,
    previous_cells,
    revision_changes,
)
from tests.unit import feed_golden_data as g

N = 40
CATEGORIES = {"site": ("01", "02", "other"), "sex": ("m", "f"), "age": ("a", "b", "c")}
LAYOUT = [("sex",), ("age",), ("age", "sex"), ("site", "sex"), ("site", "age")]
SITES = ("131041-01", "131041-02", "131041-07", "272000-01")
RECODE = {"131041-01": "01", "131041-02": "02", "131041-07": "other", "272000-01": "other"}
combinations = st.dictionaries(
    st.tuples(st.sampled_from(SITES), st.sampled_from(CATEGORIES["sex"]), st.sampled_from(CATEGORIES["age"])),
    st.integers(1, 9),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(combinations, min_size=1, max_size=5))
def test_tables_counted_together_are_each_feeds_tables_counted_alone(feeds: list[dict[Any, int]]) -> None:
    together = d.count_many(feeds, CATEGORIES, LAYOUT, prefix="p: ", recode=[RECODE] * len(feeds))
    for feed, counted in zip(feeds, together, strict=True):
        recoded: dict[tuple[str, ...], int] = {}
        for (site, *rest), n in feed.items():
            key = (RECODE[site], *rest)
            recoded[key] = recoded.get(key, 0) + n
        alone = d.tables_from_counts(recoded, CATEGORIES, LAYOUT)
        assert [t.name for t in counted.tables] == [f"p: {t.name}" for t in alone]
        assert [dict(t.cells) for t in counted.tables] == [dict(t.cells) for t in alone]
        assert d.counts(counted.tables) == {
            d.CellRef(f"p: {ref.table}", ref.key): v for ref, v in d.counts(alone).items()
        }


@functools.cache
def _two_revisions() -> tuple[list[Job], list[Any], list[Any]]:
    first = g.month_counts(N, 1)
    late = g.month_counts(N, 2, scale=0.06)
    sites = dict(g.authorities(N))
    jobs = [Job(f, None, g.targets(a, sites[a])) for a, f in sorted(first.items())]
    r1 = compose_many(jobs, threshold=3)
    jobs2 = [
        Job(g.plus(first[a], late[a]), c.body, g.targets(a, sites[a]))
        for a, c in zip(sorted(first), r1, strict=True)
    ]
    return jobs2, [c.body for c in r1], [c.body for c in compose_many(jobs2, threshold=3)]


def test_a_revision_read_by_position_is_the_revision_read_by_name() -> None:
    jobs, before, _ = _two_revisions()
    shuffled = 0
    for job, body in zip(jobs, before, strict=True):
        counted = population_counts([job.feed])[0]  # type: ignore[list-item]
        tables = population_tables(job.feed)
        by_name = previous_cells(body)
        for name, published in body["populations"].items():
            reordered = copy.deepcopy(published)
            if len(reordered) > 1 and len(reordered[-1]["cells"]) > 1:  # not in the layout's order: by name
                reordered[-1]["cells"].reverse()
                shuffled += 1
            for tables_of_body in (published, reordered):
                fast = d.revise_published(counted[name], 3, tables_of_body)
                slow = d.revise(
                    tables[name], 3, {r: v for r, v in by_name.items() if r.table.startswith(name)}
                )
                assert fast.cells == slow.cells and fast.suppressed == slow.suppressed
    assert shuffled > 0


def test_the_change_summary_compared_table_by_table_is_the_summary_of_every_figure() -> None:
    _, before, after = _two_revisions()
    changed = 0
    for old, new in zip(before, after, strict=True):
        expected = change_summary(figures(old), figures(new))
        changed += bool(expected)
        assert revision_changes(old, new) == expected
        moved = copy.deepcopy(new)  # a table whose keys are not in the same order: compared by name
        for tables in moved["populations"].values():
            tables[0]["cells"].reverse()
        assert revision_changes(old, moved) == change_summary(figures(old), figures(moved))
        renamed = copy.deepcopy(new)  # tables that do not line up at all
        renamed["populations"]["team_support"][0]["name"] += " (renamed)"
        assert revision_changes(old, renamed) == change_summary(figures(old), figures(renamed))
    assert changed > N // 4


_FIGURE = st.one_of(st.none(), st.integers(0, 40), st.floats(0, 1, allow_nan=False))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_changes_composed_by_position_are_the_summary_of_every_figure(data: st.DataObject) -> None:
    """``Composed.changes`` (cells compared by position, only the units whose figures differ named) is
    ``change_summary(figures(before), figures(after))``: against the previous body as composed and as
    read back from JSON, with its indicators and targets altered, and with tables that do not line up."""
    jobs, _, _ = _two_revisions()
    job = data.draw(st.sampled_from(jobs))
    before = copy.deepcopy(dict(job.previous or {}))
    if data.draw(st.booleans()):
        before = orjson.loads(orjson.dumps(before))  # keys as JSON arrays, as the builder reads them
    indicators = before["indicators"]
    for unit in data.draw(
        st.lists(st.sampled_from(["authority", *indicators["sites"], "131041-99"]), max_size=3)
    ):
        values = indicators["authority"] if unit == "authority" else indicators["sites"].setdefault(unit, {})
        if unit != "authority" and data.draw(st.booleans()):
            del indicators["sites"][unit]  # a site the other revision does not have
            continue
        values[
            data.draw(st.sampled_from(["referral_placements", "placement_rate", "team_support", "new"]))
        ] = data.draw(_FIGURE)
        if data.draw(st.booleans()):
            values["by_group"] = {"women": {"referral_placements": data.draw(_FIGURE)}}
    if data.draw(st.booleans()):
        before["targets"] = [
            {"scope": "131041", "fiscal_year": 2025, "achievement": None,
             "targets": [{"kind": "new_job_seekers", "group": None, "result": data.draw(_FIGURE)}]},
        ]  # fmt: skip
    if data.draw(st.booleans()):  # a table whose cells are not in the layout's order: compared by name
        tables = next(iter(before["populations"].values()))
        tables[-1]["cells"] = list(reversed(tables[-1]["cells"]))
    composed = compose_many([replace(job, previous=before)], threshold=3)[0]
    assert composed.changes == change_summary(figures(before), figures(composed.body))


# --- suppression's first round for many feeds of a layout at once, against its sequential definition


def _close_lines_one_at_a_time(s: Any, hidden: set[Any]) -> list[Any]:
    """The definition (``domain.disclosure`` before issue 14's per-layout arrays): visit the pending
    line of lowest index; where it holds exactly one hidden cell, hide its cheapest visible member."""
    added: list[Any] = []
    pending = {i for q in hidden for i in s.lines_of.get(q, ())}
    while pending:
        i = min(pending)
        pending.discard(i)
        line = s.lines[i]
        if sum(q in hidden for q in line.members) != 1:
            continue
        q = d._choose(s, line, hidden)
        if q is None:
            continue
        hidden.add(q)
        added.append(q)
        pending.update(s.lines_of[q])
    return added


def _rectangles_one_at_a_time(s: Any, hidden: set[Any], threshold: int) -> set[Any]:
    """The definition: every hidden interior cell against every rectangle of hidden cells through it."""
    rows: dict[Any, dict[str, set[str]]] = {}
    corner = {}
    for q in hidden:
        if len(q) == 2:
            (d1, c1), (d2, c2) = sorted(q)
            rows.setdefault((d1, d2), {}).setdefault(c1, set()).add(c2)
            corner[q] = ((d1, d2), c1, c2)
    safe = set()
    for q, ((d1, d2), r, c) in corner.items():
        table, v = rows[(d1, d2)], s.value[q]
        for r2, cols2 in table.items():
            if r2 == r or c not in cols2:
                continue
            for c2 in table[r] & cols2:
                if c2 == c:
                    continue
                down = min(v, s.value[frozenset({(d1, r2), (d2, c2)})])
                up = min(s.value[frozenset({(d1, r), (d2, c2)})], s.value[frozenset({(d1, r2), (d2, c)})])
                if any(d._shows_safe(v, y, threshold) for y in (v - down, v + up) if y != v):
                    safe.add(q)
    return safe


small_counts = st.dictionaries(
    st.tuples(st.sampled_from(SITES), st.sampled_from(CATEGORIES["sex"]), st.sampled_from(CATEGORIES["age"])),
    st.integers(0, 5),
    max_size=18,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(small_counts, st.sets(st.integers(0, 200), max_size=8)), min_size=1, max_size=6),
       st.integers(2, 5))  # fmt: skip
def test_lines_closed_and_rectangles_found_for_many_feeds_at_once_are_each_feeds_own(
    feeds: list[tuple[dict[Any, int], set[int]]], threshold: int
) -> None:
    """``_close_lines_many`` and ``_safe_by_rectangles_many`` on every feed of a layout at once give
    each feed what the one-at-a-time definitions give it: the same cells hidden in the same order,
    the same cells proved safe (from hidden cells drawn anywhere: primary, margins, totals)."""
    counted = d.count_many([f for f, _ in feeds], CATEGORIES, LAYOUT, recode=[RECODE] * len(feeds))
    layout = counted[0].structure.layout
    values = np.array([c.structure.by_index for c in counted], dtype=np.int64)
    hidden = np.zeros(values.shape, dtype=bool)
    expected_hidden, expected_added, expected_safe = [], [], []
    for row, (c, (_, picks)) in enumerate(zip(counted, feeds, strict=True)):
        s = c.structure
        start = {q for q, v in s.value.items() if 1 <= v < threshold}
        start |= {layout.quantities[i % len(layout.quantities)] for i in picks}
        hidden[row, [layout.index_of[q] for q in start]] = True
        alone = set(start)
        expected_added.append(_close_lines_one_at_a_time(s, alone))
        expected_hidden.append(alone)
        expected_safe.append(_rectangles_one_at_a_time(s, alone, threshold))
    feed_of, added = d._close_lines_many(layout, values, hidden)
    safe = d._safe_by_rectangles_many(layout, values, hidden, threshold)
    for row in range(len(feeds)):
        assert [layout.quantities[q] for q in added[feed_of == row].tolist()] == expected_added[row]
        assert {layout.quantities[q] for q in np.flatnonzero(hidden[row]).tolist()} == expected_hidden[row]
        assert {layout.quantities[q] for q in np.flatnonzero(safe[row]).tolist()} == expected_safe[row]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(small_counts, min_size=1, max_size=4), st.integers(2, 5))
def test_hidden_cells_listed_by_position_are_the_hidden_cells_sorted(
    feeds: list[dict[Any, int]], threshold: int
) -> None:
    """``SuppressedFeed.suppressed_in_order`` (the hidden cells found and ordered by their place in the
    layout) is ``sorted(suppressed)``, for fresh suppressions and for revisions; and a structure's
    counts by quantity (made only when asked for) are its counts in the layout's order."""
    counted = d.count_many(feeds, CATEGORIES, LAYOUT, recode=[RECODE] * len(feeds))
    for c, fresh in zip(
        counted, d.suppress_many([(c, frozenset()) for c in counted], threshold), strict=True
    ):
        s = c.structure
        assert list(s.value) == list(s.layout.quantities)
        assert list(s.value.values()) == s.by_index
        assert fresh.suppressed_in_order() == sorted(fresh.suppressed)
        published = [{"name": t.name, "cells": fresh.rows(t.name)} for t in fresh.tables]
        revised = d.revise_published(c, threshold, published)
        assert revised.suppressed_in_order() == sorted(revised.suppressed)
        by_name = d.revise(c, threshold, {ref: None for ref in fresh.cells})  # every cell hidden before
        assert by_name.suppressed_in_order() == sorted(by_name.suppressed)


def test_composing_makes_no_table_of_a_counted_feed_until_one_is_read() -> None:
    """A national build counts 3,100 feeds of ~60 tables and reads none of them as a ``Table``: a
    counted feed, suppressed or revised, makes its tables only when they are read, the same tables."""
    jobs, before, _ = _two_revisions()
    for job, body in list(zip(jobs, before, strict=True))[:4]:
        counted = population_counts([job.feed])[0]  # type: ignore[list-item]
        fresh = d.suppress_many([(c, frozenset()) for c in counted.values()], 3)
        revised = [d.revise_published(c, 3, body["populations"][name]) for name, c in counted.items()]
        assert all(c._tables is None for c in counted.values())
        for (name, c), one, other in zip(counted.items(), fresh, revised, strict=True):
            assert one.heads() == other.heads() == [(t.name, t.dims) for t in c.tables]
            assert one.tables == other.tables == c.tables == population_tables(job.feed)[name]


def test_indicators_read_a_row_at_once_as_they_read_it_cell_by_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    """``indicators`` reads each row's cells through a plan per layout (``_Published.at``): the same
    figures as reading every cell by name, for the authority, each site and the other sites' row."""
    from domain import feed as f

    jobs, _, _ = _two_revisions()
    rows_read = 0
    for job in jobs[:12]:
        counted = population_counts([job.feed])[0]  # type: ignore[list-item]
        published = f._Published(
            dict(zip(counted, d.suppress_many([(c, frozenset()) for c in counted.values()], 3), strict=True))
        )
        rows = [d.TOTAL, f.OTHER_SITES, *(f.site_category(job.feed.authority, s) for s in job.feed.sites)]
        fast = [f.indicators(published, row) for row in rows]
        with monkeypatch.context() as m:
            m.setattr(f._Published, "at", lambda self, row: self)
            slow = [f.indicators(published, row) for row in rows]
        assert fast == slow
        rows_read += len(rows)
    assert rows_read > 30


def test_a_previous_body_whose_cells_moved_between_tables_is_not_read_by_position() -> None:
    """The previous body's tables are lined up with the layout all at once (``_aligned``): a cell moved
    from the end of one table to the start of the next keeps the keys' sequence, yet is not that
    layout's, so the revision reads it by name; keys as lists (from JSON) or tuples (as composed) line up."""
    jobs, before, _ = _two_revisions()
    counted = population_counts([jobs[0].feed])[0]  # type: ignore[list-item]
    for name, c in counted.items():
        published = before[0]["populations"][name]
        layout = c.structure.layout
        assert d._aligned(layout, published) is not None
        as_tuples = [dict(t, cells=[(tuple(k), v, r) for k, v, r in t["cells"]]) for t in published]
        assert d._aligned(layout, as_tuples) == d._aligned(layout, published)
        if len(published) > 1:
            moved = copy.deepcopy(published)
            moved[1]["cells"].insert(0, moved[0]["cells"].pop())
            assert d._aligned(layout, moved) is None
            fast = d.revise_published(c, 3, moved)
            by_name = {d.CellRef(t["name"], tuple(k)): v for t in moved for k, v, _ in t["cells"]}
            assert fast.cells == d.revise(c, 3, by_name).cells
