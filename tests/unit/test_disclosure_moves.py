"""The audit's moves check as arrays (`domain.disclosure._safe_by_moves_many`), held to the exact LPs
and to the path-walking check it replaced (kept here as the reference, `moves_by_paths`): every cell
it certifies is safe by the exact LPs, it certifies every cell the reference does (so a feed needs no
second, per-feed check), many feeds at once decide as each alone, and deliberately broken versions
(a path allowed below 0, a cycle through its own column, a table over the dimension skipped) are
caught by the same properties."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from domain import disclosure as d
from tests.unit.test_disclosure_shortcuts import (
    _exact_range,
    hidden_sets,
)

Quantity = d.Quantity
Case = tuple[d._Structure, set[Quantity], int]


@dataclass(frozen=True)
class _Moves:
    """What the reference walks, as lists (main's `_MoveLayout`)."""

    grids: tuple[tuple[tuple[int, ...], ...], ...]
    tables_of: tuple[tuple[tuple[int, ...], tuple[tuple[int, int, tuple[int, ...]], ...]], ...]
    cell_of: dict[int, tuple[int, int, int]]
    lines_of: tuple[tuple[tuple[int, int], ...], ...]


def _move_layout(layout: d._Layout) -> _Moves:
    index = layout.index_of
    two_way = [(dims, axes) for _, dims, axes in layout.shape if len(dims) == 2]
    grids = tuple(
        tuple(tuple(index[d._quantity(dims, (r, c))] for c in axes[1]) for r in axes[0])
        for dims, axes in two_way
    )
    over: dict[str, list[tuple[int, int, tuple[int, ...]]]] = {}
    margins: dict[str, dict[int, None]] = {}
    for t, (dims, axes) in enumerate(two_way):
        for axis, dim in enumerate(dims):
            ms = tuple(index[frozenset({(dim, c)})] for c in axes[axis])
            over.setdefault(dim, []).append((t, axis, ms))
            margins.setdefault(dim, {}).update(dict.fromkeys(ms))
    signed: list[list[tuple[int, int]]] = [[] for _ in layout.quantities]
    for i, line in enumerate(layout.lines):
        for q in line.members:
            signed[index[q]].append((i, 1 if q == line.total else -1))
    return _Moves(
        grids=grids,
        tables_of=tuple((tuple(margins[dim]), tuple(over[dim])) for dim in over),
        cell_of={
            q: (t, r, c) for t, g in enumerate(grids) for r, row in enumerate(g) for c, q in enumerate(row)
        },
        lines_of=tuple(tuple(x) for x in signed),
    )


def moves_by_paths(
    s: d._Structure, hidden: set[Quantity], threshold: int, safe: set[Quantity]
) -> set[Quantity]:
    """`_safe_by_moves` as main had it before the moves were found as arrays (1f… session 13): per
    feed, the first shortest path a search meets, each move checked as a point. The reference the
    array form is held to."""
    moves = _move_layout(s.layout)
    index_of, quantities = s.layout.index_of, s.layout.quantities
    values = s.by_index
    hid = set(map(index_of.__getitem__, hidden))
    todo = set(map(index_of.__getitem__, hidden - safe))
    done: set[int] = set()
    left = len(todo)  # the cells of `todo` not yet in `done`

    def apply(delta: dict[int, int]) -> None:
        """Certify what ``delta`` proves, once it is checked as a point (checked only where it would
        certify a cell not certified yet: it cannot change anything else)."""
        nonlocal left
        shown = [
            i
            for i, v in delta.items()
            if v and i not in done and d._shows_safe(values[i], values[i] + v, threshold)
        ]
        if not shown:
            return
        sums: dict[int, int] = {}
        for i, v in delta.items():
            if i not in hid or values[i] + v < 0:
                return
            for line, sign in moves.lines_of[i]:
                sums[line] = sums.get(line, 0) + sign * v
        if any(sums.values()):
            return
        done.update(shown)
        left -= len(todo.intersection(shown))

    # Per table: its hidden interior cells as a graph of its categories (rows 0..R-1, then columns
    # R..), each node's neighbours as (node, cell), rows' by column and columns' by row; and R.
    adjacency: dict[int, tuple[list[list[tuple[int, int]]], int]] = {}

    def adjacent(t: int) -> tuple[list[list[tuple[int, int]]], int]:
        """Table t's hidden interior cells by row and by column."""
        if t not in adjacency:
            grid = moves.grids[t]
            r_count = len(grid)
            near: list[list[tuple[int, int]]] = [[] for _ in range(r_count + len(grid[0]))]
            for r, row in enumerate(grid):
                for c, q in enumerate(row):
                    if q in hid:
                        near[r].append((r_count + c, q))
                        near[r_count + c].append((r, q))
            adjacency[t] = near, r_count
        return adjacency[t]

    def path(
        t: int, axis: int, start: int, goal_axis: int, goal: int, change: int, skip: int
    ) -> list[tuple[int, int]] | None:
        """Shortest alternating path of hidden cells of table t from a category of ``axis`` to one of
        ``goal_axis`` (not through cell ``skip``): cells entered from ``axis``'s side move by
        ``change``, cells entered from the other side by ``-change``, none below 0. Returns (cell,
        move) pairs."""
        near, r_count = adjacent(t)
        first = start + r_count * axis
        target = goal + r_count * goal_axis
        came: dict[int, tuple[int, int, int] | None] = {first: None}
        frontier = [first]
        while frontier:
            ahead = []
            for k in frontier:
                move = change if (k >= r_count) == axis else -change
                for node, q in near[k]:
                    if node in came or q == skip or values[q] + move < 0:
                        continue
                    came[node] = (k, q, move)
                    if node == target:
                        out = []
                        while (step := came[node]) is not None:
                            node, q, move = step
                            out.append((q, move))
                        return out
                    ahead.append(node)
            frontier = ahead
        return None

    # Two margins of one dimension: x down by t, y up by t, a path in every table over the dimension.
    for margins, tables in moves.tables_of:
        shown = [m for m in margins if m in hid]
        if len(shown) < 2:
            continue
        for x in shown:
            v = values[x]
            for t in dict.fromkeys((v, 1) if v < threshold else (1,)) if v >= 1 else ():
                for y in shown:
                    if not left:  # every cell to certify is certified
                        return {quantities[i] for i in done}
                    if y == x or (x in done and y in done):
                        continue  # a move between two margins already shown rarely shows more
                    delta = {x: -t, y: t}
                    for table, axis, ms in tables:
                        if x not in ms or y not in ms:
                            break
                        found = path(table, axis, ms.index(x), axis, ms.index(y), -t, -1)
                        if found is None:
                            break
                        for q, move in found:
                            delta[q] = delta.get(q, 0) + move
                    else:
                        apply(delta)
    # A cycle through each interior cell still uncertified, within its table.
    for q in todo - done:
        where = moves.cell_of.get(q)
        if where is None:
            continue
        t, r, c = where
        v = values[q]
        for own in (1,) if v == 0 else ((-v, threshold - v) if v < threshold else (-1, 1)):
            # From its column round to its row: cells entered from a column move against q.
            found = path(t, 1, c, 0, r, -own, q)
            if found is not None:
                apply({q: own, **dict(found)})
                if q in done:
                    break
    return {quantities[i] for i in done}


def by_arrays(s: d._Structure, hidden: set[Quantity], threshold: int, safe: set[Quantity]) -> set[Quantity]:
    """`_safe_by_moves_many` on one feed, as sets."""
    values, mask = d._arrays(s, hidden)
    certified = np.zeros(mask.shape, dtype=bool)
    certified[0, [s.layout.index_of[q] for q in safe]] = True
    found = d._safe_by_moves_many(s.layout, values, mask, certified, threshold)
    return {s.layout.quantities[i] for i in np.flatnonzero(found[0]).tolist()}


def _unsound(case: Case) -> list[tuple[list[tuple[str, str]], int, int | None]]:
    """The cells the moves check certifies whose exact LP range breaks the rule."""
    s, hidden, threshold = case
    certified = by_arrays(s, hidden, threshold, set())
    assert certified <= hidden
    return [
        (sorted(q), *_exact_range(comp, i))
        for comp in d._components(s, hidden)
        for i, q in enumerate(comp.members)
        if q in certified and d._breach(*_exact_range(comp, i), threshold) is not None
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden_sets())
def test_a_cell_the_moves_check_calls_safe_is_safe_by_the_exact_lp(case: Case) -> None:
    assert _unsound(case) == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden_sets(), st.booleans())
def test_the_moves_check_certifies_every_cell_the_path_walking_check_does(case: Case, after: bool) -> None:
    """So the audit needs no per-feed walk after it: whatever the reference would still certify
    (from scratch, or after the rectangles as in the audit) the arrays have certified already."""
    s, hidden, threshold = case
    safe = d._safe_by_rectangles(s, hidden, threshold) if after else set()
    todo = hidden - safe
    assert moves_by_paths(s, hidden, threshold, safe) & todo <= by_arrays(s, hidden, threshold, safe)


def test_the_moves_check_certifies_more_than_rectangles() -> None:
    """The properties above are not vacuous: the arrays certify margins (one-way cells) and interior
    cells that no rectangle of hidden cells holds, and the reference certifies some too."""

    def beyond_rectangles(case: Case) -> bool:
        s, hidden, threshold = case
        rectangles = d._safe_by_rectangles(s, hidden, threshold)
        extra = by_arrays(s, hidden, threshold, rectangles) - rectangles
        reference = moves_by_paths(s, hidden, threshold, rectangles) - rectangles
        return any(len(q) == 1 for q in extra) and any(len(q) == 2 for q in extra) and bool(reference)

    found = find(
        hidden_sets(),
        beyond_rectangles,
        settings=settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]),
    )
    assert beyond_rectangles(found)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hidden_sets(), min_size=2, max_size=6), st.integers(2, 5))
def test_many_feeds_at_once_are_each_feeds_own(cases: list[Case], threshold: int) -> None:
    layout = cases[0][0].layout
    assert all(s.layout is layout for s, _, _ in cases)
    rows = [d._arrays(s, hidden) for s, hidden, _ in cases]
    values = np.vstack([v for v, _ in rows])
    mask = np.vstack([m for _, m in rows])
    safe = np.zeros(mask.shape, dtype=bool)
    for n, (s, hidden, _) in enumerate(cases):
        safe[n, [layout.index_of[q] for q in d._safe_by_rectangles(s, hidden, threshold)]] = True
    together = d._safe_by_moves_many(layout, values, mask, safe, threshold)
    for n in range(len(cases)):
        alone = d._safe_by_moves_many(layout, values[n : n + 1], mask[n : n + 1], safe[n : n + 1], threshold)
        assert together[n].tolist() == alone[0].tolist()


@contextmanager
def _patched(name: str, broken: Callable[..., object]) -> Iterator[None]:
    kept = getattr(d, name)
    setattr(d, name, broken)
    try:
        yield
    finally:
        setattr(d, name, kept)


def _cycles_through_own_column(leave_row: np.ndarray, leave_col: np.ndarray) -> np.ndarray:
    """`_cycles` without taking the cell's own column out: a cell then "closes a cycle" back through
    itself."""
    *_, k, _ = leave_row.shape
    through = leave_row[..., :, None, :] & leave_col[..., None, :, :]
    reach = through.any(axis=-1) | np.eye(k, dtype=bool)
    for _ in range(k):
        reach = (reach[..., :, :, None] & reach[..., None, :, :]).any(axis=-2)
    start = np.swapaxes(leave_col, -1, -2)[..., :, :, None] & ~np.eye(k, dtype=bool)
    cycle = (start[..., :, :, :] & reach[..., None, :, :]).any(axis=-2)
    return np.swapaxes(cycle, -1, -2) & leave_row


def test_broken_moves_checks_are_caught() -> None:
    """Each deliberately broken version certifies, on some feed hypothesis finds, a cell the exact LPs
    find exposed, so the soundness property above would fail on it."""
    distances = d._distances
    breaks: dict[str, Callable[..., object]] = {
        # Every hidden cell usable both ways: a path may take a cell below 0.
        "_distances": lambda out_edges, in_edges, start: distances(
            out_edges | in_edges, out_edges | in_edges, start
        ),
        "_cycles": _cycles_through_own_column,
    }
    for name, broken in breaks.items():
        with _patched(name, broken):
            found = find(
                hidden_sets(),
                lambda case: bool(_unsound(case)),
                settings=settings(
                    max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
                ),
            )
            assert _unsound(found), name

    def first_table_only(out_edges: np.ndarray, in_edges: np.ndarray, start: np.ndarray) -> object:
        """A margin move that looks at the first table over the dimension only."""
        tables = out_edges.shape[1]
        return distances(
            np.repeat(out_edges[:, :1], tables, axis=1), np.repeat(in_edges[:, :1], tables, axis=1), start
        )

    with _patched("_distances", first_table_only):
        found = find(
            hidden_sets(),
            lambda case: bool(_unsound(case)),
            settings=settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]),
        )
        assert _unsound(found)


@st.composite
def narrower_one_way_tables(draw: st.DrawFn) -> Case:
    """A layout the feeds never make but `suppress` takes: a one-way table over a dimension lacking
    categories its two-way table has (their rows are then all 0, so the tables agree), and any hidden
    set. A margin move to such a category would leave the one-way table's total line unbalanced."""
    rows, extra, columns = (
        ("a", "b", "c")[: draw(st.integers(2, 3))],
        ("z",),
        ("p", "q", "r")[: draw(st.integers(2, 3))],
    )
    two = {(r, c): draw(st.sampled_from((0, 1, 1, 2, 3, 5))) for r in rows for c in columns}
    two |= {(r, c): 0 for r in extra for c in columns}
    tables = [
        d.Table("s", ("s",), {(r,): sum(two[(r, c)] for c in columns) for r in rows}),
        d.Table("s × e", ("s", "e"), two),
    ]
    if draw(st.booleans()):
        tables.append(d.Table("e", ("e",), {(c,): sum(two[(r, c)] for r in rows + extra) for c in columns}))
    s = d._structure(tables)
    every = sorted(s.value, key=lambda q: repr(sorted(q)))
    hidden = set(draw(st.lists(st.sampled_from(every), min_size=2, unique=True)))
    return s, hidden, draw(st.integers(2, 5))


def test_no_margin_move_leaves_a_narrower_one_way_table_unbalanced() -> None:
    """(review13) A one-way table over ``s`` without ``z``, which its two-way table has: moving ``a``
    down and ``z`` up along a path of hidden cells balances the two-way table, not ``s``'s total line
    (``a`` is there the total less ``b``): every cell that move would show safe is determined."""
    t1 = d.Table("s", ("s",), {("a",): 1, ("b",): 5})
    t2 = d.Table("s × e", ("s", "e"), {("a", "p"): 1, ("a", "q"): 0, ("b", "p"): 2, ("b", "q"): 3,
                                       ("z", "p"): 0, ("z", "q"): 0})  # fmt: skip
    s = d._structure([t1, t2])
    hidden = {
        frozenset(q) for q in ({("s", "a")}, {("s", "a"), ("e", "p")}, {("s", "z")}, {("s", "z"), ("e", "p")})
    }
    assert _unsound((s, hidden, 3)) == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(narrower_one_way_tables())
def test_a_cell_the_moves_check_calls_safe_in_a_narrower_one_way_layout_is_safe_by_the_exact_lp(
    case: Case,
) -> None:
    assert _unsound(case) == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden_sets(), st.data())
def test_a_cell_certified_stays_safe_when_more_cells_are_hidden(case: Case, data: st.DataObject) -> None:
    """A later round of suppression keeps what an earlier one certified (`_certified`'s ``known``):
    hiding more cells keeps every feasible point feasible, so the exact LPs still find those cells
    safe."""
    s, hidden, threshold = case
    certified = d._certified(s, hidden, threshold, set())
    every = sorted(s.value, key=lambda q: repr(sorted(q)))
    more = hidden | set(data.draw(st.lists(st.sampled_from(every), max_size=6)))
    for comp in d._components(s, more):
        for i, q in enumerate(comp.members):
            if q in certified:
                assert d._breach(*_exact_range(comp, i), threshold) is None, sorted(q)
