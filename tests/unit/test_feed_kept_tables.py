"""A kept body's tables are written from their layout's template (``builder._tables_text``), and its
hidden cells from each cell's text (``builder._suppressed_text``): the same bytes as their rows and
list written by orjson with every object's keys in jsonb's order (``as_kept``, the way they were kept
before), for every layout, count, threshold and revision; and every kept text of a composed feed
(body, hidden cells, changes) the same bytes as that way gives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.feed import builder
from consumers.feed.builder import as_kept
from domain.disclosure import CellRef, revise, suppress
from domain.feed import FeedCounts, Job, compose_many, population_tables
from tests.unit import feed_golden_data as g
from tests.unit.feed_strategies import months

HORIZON = datetime(2025, 11, 5, 15, 0, 0, 123456, tzinfo=UTC).isoformat()


def _kept_as_before(work: Sequence[builder._Work], threshold: int) -> list[builder._Kept]:
    """``builder._kept``, each text checked against the rows' text (the way bodies were written before
    the templates): the body, each population's tables, the hidden cells."""
    jobs = [replace(w.job, previous=orjson.loads(w.previous)) if w.previous else w.job for w in work]
    kept = builder._kept(work, threshold=threshold, horizon=HORIZON)
    for w, c, k in zip(work, compose_many(jobs, threshold=threshold), kept, strict=True):
        for name, s in c.populations.items():
            assert builder._tables_text(s) == orjson.dumps(as_kept(c.body["populations"][name])), name
        before = as_kept(dict(c.body, revision=w.revision, horizon=HORIZON, changes=c.changes))
        assert k.body == orjson.dumps(before)
        assert k.suppressed == orjson.dumps(as_kept(c.suppressed))
        assert k.changes_text == orjson.dumps(before["changes"])
    return kept


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(months(), st.integers(1, 5))
def test_fuzz_kept_tables_are_the_rows_text(months: tuple[FeedCounts, FeedCounts], threshold: int) -> None:
    first, late = months
    targets = g.targets(first.authority, first.sites)
    [one] = _kept_as_before([builder._Work(Job(first, None, targets), None, 1)], threshold)
    second = replace(g.plus(first, late), sites=late.sites)
    _kept_as_before([builder._Work(Job(second, None, targets), one.body.decode(), 2)], threshold)


def test_kept_tables_of_a_national_like_month_are_the_rows_text() -> None:
    feeds = g.month_counts(60, 7)
    sites = dict(g.authorities(60))
    work = [builder._Work(Job(f, None, g.targets(a, sites[a])), None, 1) for a, f in sorted(feeds.items())]
    ones = _kept_as_before(work, 3)
    late = g.month_counts(60, 8, scale=0.1)
    work2 = [
        builder._Work(Job(g.plus(f, late[a]), None, g.targets(a, sites[a])), k.body.decode(), 2)
        for (a, f), k in zip(sorted(feeds.items()), ones, strict=True)
    ]
    twos = _kept_as_before(work2, 3)
    # Both templates written: populations with hidden cells (reasons of each kind) and without.
    texts = b"".join(k.body for k in ones + twos)
    for reason in (
        b'"primary"',
        b'"complementary"',
        b'"previous_revision"',
        b'"changed_since_previous_revision"',
    ):
        assert reason in texts
    assert any(b'"dims":["site","status"]' in k.body and b'"primary"' not in k.body for k in ones)


def test_tables_whose_cells_are_not_in_a_layouts_order_are_written_from_their_rows() -> None:
    """A revision over a body of another layout is suppressed afresh (``disclosure.revise``): its cells
    are not kept in a layout's order, and its tables are written from their rows."""
    tables = population_tables(g.month_counts(3, 7)[sorted(g.month_counts(3, 7))[0]])["referral_placements"]
    fresh = suppress(tables, 3)
    other = revise(tables, 3, {CellRef("another table", ("x",)): 1})
    assert fresh.columns() is not None and other.columns() is None
    assert fresh.suppressed and other.suppressed
    for s in (fresh, other):
        rows = [{"dims": list(dims), "name": name, "cells": s.rows(name)} for name, dims in s.heads()]
        assert builder._tables_text(s) == orjson.dumps(as_kept(rows))
        hidden = [[ref.table, list(ref.key)] for ref in sorted(s.suppressed)]
        assert builder._suppressed_text({"a": s, "b": fresh}) == orjson.dumps(
            hidden + [[ref.table, list(ref.key)] for ref in sorted(fresh.suppressed)]
        )
