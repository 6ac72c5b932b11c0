"""A feed whose first round certifies every hidden cell is published from its reason codes for all the
feeds of a layout at once (`domain.disclosure._published_many`): the same cells, values, reasons, reason
texts, hidden cells and spans as `_published` gives from the reasons one cell at a time; and a broken
version (the codes' reasons swapped) is caught by the same comparison."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import disclosure as d
from tests.unit.test_disclosure_shortcuts import CATEGORIES, LAYOUT, counts, small_counts

R = d.SuppressionReason


@st.composite
def coded_feeds(draw: st.DrawFn) -> tuple[list[d.Counted], np.ndarray]:
    """Feeds of one layout, each with reason codes per quantity (0: shown)."""
    drawn = [draw(st.one_of(counts, small_counts)) for _ in range(draw(st.integers(1, 4)))]
    feeds = [
        d.Counted(tuple(t), d._structure(t))
        for t in (d.tables_from_counts(c, CATEGORIES, LAYOUT) for c in drawn)
    ]
    width = len(feeds[0].structure.layout.quantities)
    code = np.array(
        [draw(st.lists(st.sampled_from((0, 0, 1, 2, 3)), min_size=width, max_size=width)) for _ in feeds],
        dtype=np.int8,
    )
    for row in code:
        if not row.any():
            row[0] = 3
    return feeds, code


def _as_rows(feed: d.SuppressedFeed) -> tuple[object, ...]:
    cells = feed.cells
    assert isinstance(cells, d._Cells)
    return (
        list(cells.refs),
        list(cells.published),
        list(cells.reasons),
        list(cells.why),
        sorted(cells.hidden_at or []),
        feed.suppressed_in_order(),
        dict(feed.spans or {}),
        feed.threshold,
        list(feed.tables),
    )


def _one_at_a_time(
    feeds: list[d.Counted], code: np.ndarray, threshold: int, reasons: list[R | None]
) -> list[d.SuppressedFeed]:
    out = []
    for c, row in zip(feeds, code, strict=True):
        layout = c.structure.layout
        hidden = {layout.quantities[i]: reasons[k] for i, k in enumerate(row.tolist()) if k}
        out.append(d._published(c, threshold, c.structure, hidden))  # type: ignore[arg-type]
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coded_feeds(), st.integers(2, 5))
def test_feeds_published_from_codes_are_published_as_from_their_reasons(
    case: tuple[list[d.Counted], np.ndarray], threshold: int
) -> None:
    feeds, code = case
    layout = feeds[0].structure.layout
    values = np.array([c.structure.by_index for c in feeds], dtype=np.int64)
    many = d._published_many(layout, feeds, values, code, threshold)
    expected = _one_at_a_time(feeds, code, threshold, [None, R.PRIMARY, R.PREVIOUS_REVISION, R.COMPLEMENTARY])
    assert [_as_rows(f) for f in many] == [_as_rows(f) for f in expected]
    # A broken version (primary and complementary swapped) differs wherever either is used.
    swapped = _one_at_a_time(feeds, code, threshold, [None, R.COMPLEMENTARY, R.PREVIOUS_REVISION, R.PRIMARY])
    if np.isin(code, (1, 3)).any():
        assert [_as_rows(f) for f in many] != [_as_rows(f) for f in swapped]
