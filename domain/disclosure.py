"""Statistical disclosure control for the monthly placement feed.

Method. A feed is a set of linked count tables (one-way and two-way, each published with its margins
and grand total); a cell is identified by *what it counts* (its category per dimension, totals dropped),
so a one-way table and the margin of a two-way table over the same dimension are the same numbers and
every table shares one grand total. Every additive relation (each row, column and margin line of every
table) is a linear constraint. (1) Primary suppression hides every cell, totals included, whose count is
1 to threshold−1 (default 3). (2) Complementary suppression: no constraint may keep exactly one hidden
cell; where one does, the smallest non-zero visible non-total cell of that line is hidden too (its total
if there is none), repeated to a fixed point. (3) Audit: for every hidden cell, linear programming
(LP relaxation over non-negative values, all published cells and all constraints) gives the range an
attacker can infer. A cell is protected when that range is not a single value and it contains 0 or a
value of at least the threshold, so nobody can be shown to be in a small group. Each exposed cell gets
one more complementary suppression, preferably the cell that closes a cycle of hidden cells around it
(a value can only move along a cycle), and steps 2–3 repeat until the audit is clean. Cells hidden in
an earlier revision of the same feed stay hidden. Zero cells are published as 0. The LP range can only
be wider than what integer reasoning yields; the tests attack feeds with integer programming as well.

Computation (no change to the method above): a feed with nothing to protect skips lines and audit; a
rectangle of hidden interior cells certifies its corners without an LP; whole-number moves of hidden
cells (a cycle in one table, or two margins of a dimension moved against each other along a shortest
path in every table over it), found for all the feeds of a layout at once as arrays, certify most of
the rest, and where they and the rectangles certify every hidden cell the audit ends there
(`_safe_by_moves_many`); a move along the null space
of a linked group's equations (sparse elimination, no solver) certifies nearly all of the rest (any
feasible point where a cell is 0, at least the threshold, or an integer away from a large count proves
it safe), and a cell it cannot move at all is determined exactly, so exposed without an LP; a group with
a cell still undecided gets a few probe LPs, and the exact min and max LPs
are solved only for the cells still left. `suppress_many` runs many feeds' suppressions in lockstep and
stacks the LPs of the same step into one block-diagonal solver call (blocks are independent, so each
feed gets the decisions it would get alone); its first round (lines closed, rectangles and moves found)
runs for all the feeds of a layout at once as arrays (`_close_lines_many`, `_safe_by_rectangles_many`,
`_safe_by_moves_many`); the
per-layout structure (cells, lines, summing matrix, line arrays) is built once and cached.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence, ValuesView
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

DEFAULT_THRESHOLD = 3
_T = TypeVar("_T")
# Marks a margin in a cell key ("計" is the usual total label of Japanese statistical tables). A
# category with this name would be indistinguishable from the margin, so it is refused.
TOTAL = "計"


class DisclosureError(ValueError):
    """A feed that cannot be protected as given; the message says which table or cell and why."""


@dataclass(frozen=True)
class Table:
    """Interior counts of a one- or two-way table; every category combination present, zeros included.

    Margins and the grand total are not stored: they are derived and published by `suppress`, with
    `TOTAL` standing for the summed-over dimension in a cell key, e.g. ("計", "男") in an occupation × sex
    table is the number of men.
    """

    name: str
    dims: tuple[str, ...]
    cells: Mapping[tuple[str, ...], int]
    # What `categories` gives, where the maker of the table knows it (`tables_from_counts` lists the
    # cells in the product order of known categories); worked out from the keys otherwise.
    axes: tuple[tuple[str, ...], ...] | None = field(default=None, compare=False, repr=False)

    def categories(self) -> tuple[tuple[str, ...], ...]:
        """Categories per dimension, in first-seen order of the cell keys."""
        if self.axes is not None:
            return self.axes
        seen: list[dict[str, None]] = [{} for _ in self.dims]
        for key in self.cells:
            for axis, category in enumerate(key):
                seen[axis].setdefault(category, None)
        return tuple(tuple(axis) for axis in seen)


class CellRef(NamedTuple):
    """A published cell: table name and key (a category or `TOTAL` per dimension).

    A named tuple rather than a dataclass: a national build hashes and sorts millions of them, and a
    tuple does both in C."""

    table: str
    key: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.table}[{', '.join(self.key)}]"


class SuppressionReason(Enum):
    PRIMARY = "primary"  # the count itself is 1..threshold-1
    COMPLEMENTARY = "complementary"  # hidden so that a primary cell cannot be worked out
    PREVIOUS_REVISION = "previous_revision"  # hidden in an earlier revision of this feed
    CHANGED = "changed_since_previous_revision"  # its count differs from the one published before
    NEW = (
        "new_in_revision"  # not published by the previous revision (a layout from before layouts were fixed)
    )


# Each reason's published name, looked up without the enum's ``value`` property (a national month
# writes ~235,000 hidden cells' reasons).
_WHY = {reason: reason.value for reason in SuppressionReason}


@dataclass(frozen=True)
class PublishedCell:
    ref: CellRef
    value: int | None  # None: suppressed
    reason: SuppressionReason | None


class _Cells(Mapping[CellRef, "PublishedCell"]):
    """A feed's published cells as arrays in the layout's order (values, reasons), a ``PublishedCell``
    made only when one is asked for: a national month publishes about 1.4 million cells, and the
    builder reads them as whole tables (``SuppressedFeed.rows``) and a few by name."""

    __slots__ = ("_rows", "cell_keys", "hidden_at", "index", "published", "rank", "reasons", "refs", "why")

    def __init__(
        self,
        refs: tuple[CellRef, ...],
        index: Mapping[CellRef, int],
        values: list[int | None],
        reasons: Sequence[SuppressionReason | None],
        keys: tuple[tuple[str, ...], ...] | None = None,
        rank: Sequence[int] | None = None,  # each cell's place in the sorted order of `refs`
        why: Sequence[str | None] | None = None,  # each reason's value, where the maker wrote them
        hidden_at: list[int] | None = None,  # the positions of the hidden cells, where the maker knows them
    ) -> None:
        self.refs, self.index, self.published, self.reasons, self.rank = refs, index, values, reasons, rank
        self.cell_keys = keys if keys is not None else tuple(ref.key for ref in refs)
        # Each reason as published.
        self.why = why if why is not None else [None if r is None else r.value for r in reasons]
        self.hidden_at = hidden_at
        self._rows: list[tuple[tuple[str, ...], int | None, str | None]] | None = None

    def rows(self) -> list[tuple[tuple[str, ...], int | None, str | None]]:
        """Every cell as (key, value or None, reason or None), in order; made once, sliced per table."""
        if self._rows is None:
            self._rows = list(zip(self.cell_keys, self.published, self.why, strict=True))
        return self._rows

    def __getitem__(self, ref: CellRef) -> PublishedCell:
        i = self.index[ref]
        return PublishedCell(ref, self.published[i], self.reasons[i])

    def __contains__(self, ref: object) -> bool:
        return ref in self.index

    def __iter__(self) -> Iterator[CellRef]:
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)


@dataclass(frozen=True)
class SuppressedFeed:
    tables: Sequence[Table]  # a tuple, or a counted feed's tables made when read (`_Tables`)
    threshold: int
    cells: Mapping[CellRef, PublishedCell]
    # The cells hidden, where the maker listed them (`suppressed` works them out otherwise).
    hidden: frozenset[CellRef] | None = field(default=None, compare=False, repr=False)
    # Where each table's cells lie in `cells` (first, end), where they are kept in a layout's order.
    spans: Mapping[str, tuple[int, int]] | None = field(default=None, compare=False, repr=False)
    # What the previous revision published for each cell, in the same order, where `revise_published`
    # read it by position (the change summary then compares the two by position too).
    before: Sequence[int | None] | None = field(default=None, compare=False, repr=False)

    def value(self, ref: CellRef) -> int | None:
        return self.cells[ref].value

    def heads(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each table's name and dimensions, in order (without making a counted feed's tables)."""
        tables = self.tables
        return tables.heads if isinstance(tables, _Tables) else [(t.name, t.dims) for t in tables]

    def published_value(self, ref: CellRef) -> int | None:
        """The value published for ``ref``; None where it is hidden or not a cell of this feed."""
        cells = self.cells
        if isinstance(cells, _Cells):
            i = cells.index.get(ref)
            return None if i is None else cells.published[i]
        cell = cells.get(ref)
        return None if cell is None else cell.value

    def positions(self) -> tuple[Mapping[CellRef, int], Sequence[int | None]]:
        """Each cell's position and the values published, in that order (None where hidden): for
        readers of many cells by name (a national build's indicators read ~450,000)."""
        cells = self.cells
        if isinstance(cells, _Cells):
            return cells.index, cells.published
        refs = list(cells)
        return {ref: n for n, ref in enumerate(refs)}, [cells[ref].value for ref in refs]

    def rows(self, table: str) -> list[tuple[tuple[str, ...], int | None, str | None]]:
        """One table's cells in publishing order: (key, value or None, reason or None)."""
        cells = self.cells
        if isinstance(cells, _Cells) and self.spans is not None:
            first, end = self.spans[table]
            return cells.rows()[first:end]
        return [
            (ref.key, c.value, None if c.reason is None else c.reason.value)
            for ref, c in cells.items()
            if ref.table == table
        ]

    def columns(self) -> tuple[tuple[CellRef, ...], Sequence[int | None], Sequence[str | None]] | None:
        """Every cell in publishing order (the tables one after another, as ``heads`` lists them), the
        values published (None where hidden) and each reason's name (None where shown), as lists, not
        a row per cell; None where the cells are not kept in a layout's order (read ``rows`` then). The
        cells tuple is the layout's own: the same object for every feed of the layout."""
        cells = self.cells
        if not isinstance(cells, _Cells) or self.spans is None:
            return None
        return cells.refs, cells.published, cells.why

    def changed(self) -> list[tuple[CellRef, int | None, int | None]]:
        """The cells whose value differs from ``before``: (cell, value before, value now)."""
        cells, before = self.cells, self.before
        if before is None or not isinstance(cells, _Cells):
            raise DisclosureError("no previous revision's values lined up with these cells")
        now, refs = cells.published, cells.refs
        if type(before) is list and before == now:  # most populations of a later revision
            return []
        return [
            (refs[i], before[i], now[i]) for i, (x, y) in enumerate(zip(before, now, strict=True)) if x != y
        ]

    @property
    def published(self) -> Mapping[CellRef, int | None]:
        return MappingProxyType({ref: cell.value for ref, cell in self.cells.items()})

    def suppressed_in_order(self) -> list[CellRef]:
        """``sorted(self.suppressed)``; where the cells are kept in a layout's order, the hidden ones are
        found and ordered by position (a national month sorts ~190,000 hidden cells)."""
        at = self.suppressed_positions()
        if at is not None:
            refs = self.cells.refs  # type: ignore[attr-defined]  # kept in a layout's order: _Cells
            return [refs[n] for n in at]
        return sorted(self.suppressed)

    def suppressed_positions(self) -> list[int] | None:
        """The positions (in ``columns``' order) of the hidden cells, in the order of ``sorted(self.suppressed)``;
        None where the cells are not kept in a layout's order."""
        cells = self.cells
        if not isinstance(cells, _Cells) or cells.rank is None:
            return None
        at = cells.hidden_at
        if at is None:
            at = [n for n, v in enumerate(cells.published) if v is None]
        return sorted(at, key=cells.rank.__getitem__)

    @property
    def suppressed(self) -> frozenset[CellRef]:
        """Pass to the next revision's `suppress` as `previously_suppressed`."""
        if self.hidden is not None:
            return self.hidden
        cells = self.cells
        if isinstance(cells, _Cells) and cells.hidden_at is not None:
            return frozenset(cells.refs[n] for n in cells.hidden_at)
        return frozenset(ref for ref, cell in cells.items() if cell.value is None)


@dataclass(frozen=True)
class Exposure:
    """A suppressed cell whose value an attacker can narrow down too far."""

    ref: CellRef
    lower: int
    upper: int | None  # None: no useful upper bound
    rule: str


# ---------------------------------------------------------------------------------------------------
# Building tables


def build_feed_tables(
    records: Iterable[Mapping[str, str]],
    categories: Mapping[str, Sequence[str]],
    layout: Sequence[tuple[str, ...]],
) -> tuple[Table, ...]:
    """Count placement records into the linked tables of one feed.

    `records` hold one category per dimension for each placement; `categories` lists every category
    of every dimension (so empty cells appear as 0); `layout` lists each table's dimensions, e.g.
    [("attribute",), ("occupation", "sex"), ("age_band", "sex")]. Each dimension must partition the
    placements (one category each, with a catch-all where needed): that is what makes the one-way
    tables the margins of the two-way ones and lets them share the grand total.
    """
    for dim, cats in categories.items():
        if TOTAL in cats:
            raise DisclosureError(f"dimension {dim!r} has a category named {TOTAL!r}, the total label")
        if len(set(cats)) != len(cats):
            raise DisclosureError(f"dimension {dim!r} lists a category twice")
    for dims in layout:
        _check_dims(dims, "layout entry " + " × ".join(dims))
        for dim in dims:
            if dim not in categories:
                raise DisclosureError(f"layout uses dimension {dim!r}, which has no category list")
    all_dims = tuple(categories)
    known = [set(categories[d]) for d in all_dims]

    def refuse(n: int, record: Mapping[str, str]) -> DisclosureError:
        dim, value = next(
            (d, v) for d, k in zip(all_dims, known, strict=True) if (v := record.get(d)) not in k
        )
        return DisclosureError(
            f"record {n} has {dim}={value!r}, not one of the categories {list(categories[dim])}"
        )

    combinations: dict[tuple[str, ...], int] = {}
    for n, record in enumerate(records):
        try:
            key = tuple([record[dim] for dim in all_dims])
        except KeyError:
            raise refuse(n, record) from None
        seen = combinations.get(key)
        if seen is None:
            combinations[key] = 1  # a new combination: check its categories once
            if not all(c in k for c, k in zip(key, known, strict=True)):
                raise refuse(n, record)
        else:
            combinations[key] = seen + 1
    return tables_from_counts(combinations, categories, layout)


def tables_from_counts(
    combinations: Mapping[tuple[str, ...], int],
    categories: Mapping[str, Sequence[str]],
    layout: Sequence[tuple[str, ...]],
) -> tuple[Table, ...]:
    """`build_feed_tables` from records already counted: the number of records per combination of
    categories, one category per dimension of `categories`, in its order."""
    return count_many([combinations], categories, layout)[0].tables


class Counted:
    """One feed's tables counted by `count_many`, with their linked structure (what `suppress` and
    `revise` start from) already worked out and checked. `count_many` makes the tables only when they
    are first read (``interior``: the feed's interior counts in the layout's order): composing a feed
    reads its structure and its published cells, never a `Table` (a national build counts 3,100 feeds
    of ~60 tables each, and making them was ~0.5 s of its CPU)."""

    __slots__ = ("_interior", "_tables", "structure")

    def __init__(
        self, tables: Sequence[Table] | None, structure: _Structure, interior: np.ndarray | None = None
    ) -> None:
        if tables is None and interior is None:
            raise ValueError("counted tables need their tables or their interior counts")
        self._tables = None if tables is None else tuple(tables)
        self.structure = structure
        self._interior = interior

    @property
    def tables(self) -> tuple[Table, ...]:
        if self._tables is None:
            layout, row, at = self.structure.layout, self._interior, 0
            tables = []
            for (name, dims, axes), keys in zip(layout.shape, layout.interior, strict=True):
                tables.append(Table(name, dims, _CountedCells(keys, row[at : at + len(keys)]), axes))  # type: ignore[index]
                at += len(keys)
            self._tables = tuple(tables)
        return self._tables

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counted) and (self.tables, self.structure) == (other.tables, other.structure)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Counted(tables={self.tables!r}, structure={self.structure!r})"


class _Tables(Sequence[Table]):
    """A counted feed's tables as a suppressed feed holds them: made only if read (`Counted.tables`);
    their names and dimensions are the layout's."""

    __slots__ = ("_counted",)

    def __init__(self, counted: Counted) -> None:
        self._counted = counted

    @property
    def heads(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(name, dims) for name, dims, _ in self._counted.structure.layout.shape]

    def __getitem__(self, i: Any) -> Any:
        return self._counted.tables[i]

    def __len__(self) -> int:
        return len(self._counted.structure.layout.shape)

    def __iter__(self) -> Iterator[Table]:
        return iter(self._counted.tables)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Tables):
            other = other._counted.tables
        return self._counted.tables == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._counted.tables)


class _CountedCells(Mapping[tuple[str, ...], int]):
    """A counted table's interior cells: a slice of the block `count_many` counted, made a dict only
    when a cell is asked for (composing a feed reads the structure, never the cells)."""

    __slots__ = ("_cells", "_counts", "_keys")

    def __init__(self, keys: Sequence[tuple[str, ...]], counts: np.ndarray) -> None:
        self._keys, self._counts = keys, counts
        self._cells: dict[tuple[str, ...], int] | None = None

    def _dict(self) -> dict[tuple[str, ...], int]:
        if self._cells is None:
            self._cells = dict(zip(self._keys, self._counts.tolist(), strict=True))
        return self._cells

    def __getitem__(self, key: tuple[str, ...]) -> int:
        return self._dict()[key]

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def values(self) -> ValuesView[int]:  # in the keys' order, as a dict's
        return self._dict().values()

    def __eq__(self, other: object) -> bool:
        return self._dict() == other

    __hash__ = None  # type: ignore[assignment]


def count_many(
    feeds: Sequence[Mapping[tuple[str, ...], int]],
    categories: Mapping[str, Sequence[str]],
    layout: Sequence[tuple[str, ...]],
    *,
    prefix: str = "",
    recode: Sequence[Mapping[str, str]] | None = None,
) -> list[Counted]:
    """`tables_from_counts` for many feeds of one layout, each with its structure (the sums and checks
    `suppress` starts from): every feed's combinations become category indices in one pass, each
    table is one bincount over all the feeds, and every published cell of every feed one sparse
    product, so a feed costs a few list conversions (a national build counts 3,100 feeds × 7
    populations in a handful of layouts). Tables are named ``prefix`` + their dimensions;
    ``recode[f]`` gives the category of feed f's first element of each combination (a site id's
    category in that feed's tables, say)."""
    plan = _count_plan(
        tuple((d, tuple(c)) for d, c in categories.items()), tuple(tuple(dims) for dims in layout)
    )
    all_dims, index = plan.dims, plan.index
    keys = [list(c) for c in feeds]
    flat = list(itertools.chain.from_iterable(keys))
    if flat and set(map(len, flat)) != {len(all_dims)}:
        bad = next(k for k in flat if len(k) != len(all_dims))
        raise DisclosureError(f"combination {bad!r} does not give one category per dimension")
    combos = np.empty((len(flat), len(all_dims)), dtype=np.int64)
    try:
        for a, column in enumerate(zip(*flat, strict=True)):
            if a == 0 and recode is not None:
                codes = [index[0][recode[f][k[0]]] for f, ks in enumerate(keys) for k in ks]
            else:
                codes = list(map(index[a].__getitem__, column))
            combos[:, a] = codes
    except (KeyError, TypeError):
        raise _refused(keys, recode, plan) from None
    feed_of = np.repeat(np.arange(len(keys)), [len(k) for k in keys])
    weights = np.fromiter(
        itertools.chain.from_iterable(c.values() for c in feeds), dtype=np.int64, count=len(flat)
    )
    shape = []
    blocks = []
    for dims, axes, size, _ in plan.tables:
        cell = feed_of * size
        stride = size
        for a in axes:
            stride //= len(index[a])
            cell += combos[:, a] * stride
        blocks.append(np.bincount(cell, weights=weights, minlength=len(keys) * size).reshape(len(keys), size))
        shape.append((prefix + " × ".join(dims), dims, tuple(plan.categories[a] for a in axes)))
    interior = np.hstack(blocks).astype(np.int64) if blocks else np.zeros((len(keys), 0), dtype=np.int64)
    if interior.size and interior.min() < 0:
        f, c = np.argwhere(interior < 0)[0].tolist()
        raise DisclosureError(f"feed {f} has a negative count ({int(interior[f, c])}), not a count")
    return _counted(_layout(tuple(shape)), interior)


def _counted(layout: _Layout, interior: np.ndarray) -> list[Counted]:
    """Each feed's tables and structure from its interior counts (one row of ``interior`` per feed,
    the layout's interior cells in order)."""
    sums = np.asarray(layout.summing @ interior.T)  # published cells × feeds
    first = sums[layout.first_source]
    mismatch = np.argwhere(sums != first[layout.quantity_of])
    if mismatch.size:  # pragma: no cover - counted tables describe the same placements by construction
        r, f = mismatch[0].tolist()
        raise DisclosureError(f"{layout.sources[r][1]} of feed {f} does not add up with the cells it sums")
    return [
        Counted(None, _Structure(layout, column, firsts), row)
        for row, column, firsts in zip(interior, sums.T.tolist(), first.T.tolist(), strict=True)
    ]


def _refused(
    keys: Sequence[list[tuple[str, ...]]], recode: Sequence[Mapping[str, str]] | None, plan: _CountPlan
) -> DisclosureError:
    """Why `count_many` cannot count a combination: the first category that is not one of its dimension's
    (numbered within its feed's combinations)."""
    for f, ks in enumerate(keys):
        for n, key in enumerate(ks):
            for a, value in enumerate(key):
                if a == 0 and recode is not None:
                    value = recode[f].get(value, value)  # the category it maps to
                if not isinstance(value, str) or value not in plan.index[a]:
                    return DisclosureError(
                        f"record {n} has {plan.dims[a]}={value!r}, not one of the categories {list(plan.categories[a])}"
                    )
    return DisclosureError("a combination could not be counted")  # pragma: no cover


@dataclass(frozen=True)
class _CountPlan:
    dims: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]  # per dimension
    index: tuple[dict[str, int], ...]  # per dimension: category -> position
    # Per table: its dimensions, their positions in `dims`, its number of interior cells, their keys.
    tables: tuple[tuple[tuple[str, ...], tuple[int, ...], int, list[tuple[str, ...]]], ...]


@functools.lru_cache(maxsize=256)
def _count_plan(
    categories: tuple[tuple[str, tuple[str, ...]], ...], layout: tuple[tuple[str, ...], ...]
) -> _CountPlan:
    """What `tables_from_counts` needs of the categories and layout, checked and worked out once per
    layout (a national build counts thousands of feeds with a handful of layouts). The key lists are
    shared by the tables built from one plan; a `Table` never changes its cells' keys."""
    for dim, cats in categories:
        if TOTAL in cats:
            raise DisclosureError(f"dimension {dim!r} has a category named {TOTAL!r}, the total label")
        if len(set(cats)) != len(cats):
            raise DisclosureError(f"dimension {dim!r} lists a category twice")
    named = dict(categories)
    for dims in layout:
        _check_dims(dims, "layout entry " + " × ".join(dims))
        for dim in dims:
            if dim not in named:
                raise DisclosureError(f"layout uses dimension {dim!r}, which has no category list")
    all_dims = tuple(named)
    index = tuple({c: i for i, c in enumerate(named[d])} for d in all_dims)
    tables = tuple(
        (dims, tuple(all_dims.index(d) for d in dims), math.prod(len(named[d]) for d in dims),
         _product([named[d] for d in dims]))
        for dims in layout
    )  # fmt: skip
    return _CountPlan(all_dims, tuple(named[d] for d in all_dims), index, tables)


def _product(axes: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = [()]
    for axis in axes:
        keys = [(*k, c) for k in keys for c in axis]
    return keys


def _check_dims(dims: tuple[str, ...], what: str) -> None:
    if len(dims) not in (1, 2):
        raise DisclosureError(
            f"{what} has {len(dims)} dimensions; only one- and two-way tables are supported"
        )
    if len(set(dims)) != len(dims):
        raise DisclosureError(f"{what} repeats a dimension")


# ---------------------------------------------------------------------------------------------------
# The linked structure: quantities (what a cell counts) and the additive lines between them

Quantity = frozenset[tuple[str, str]]  # {(dimension, category)}; the empty set is the grand total


@dataclass(frozen=True)
class _Line:
    total: Quantity
    parts: tuple[Quantity, ...]

    @property
    def members(self) -> tuple[Quantity, ...]:
        return (self.total, *self.parts)


@dataclass(frozen=True)
class _Layout:
    """What a feed's cells count and how they add up; depends on the tables' shape, not their counts,
    so it is built once per layout and shared by every feed of a national build."""

    refs: Mapping[CellRef, Quantity]
    ref_order: tuple[CellRef, ...]
    sources: tuple[tuple[int, CellRef, tuple[tuple[str, ...], ...]], ...]  # table, cell, interior keys
    lines: tuple[_Line, ...]
    lines_of: Mapping[Quantity, tuple[int, ...]]
    # Vectorised form of `sources`: each table's interior keys in product order (concatenated, they
    # index the columns of `summing`), the matrix summing them into every published cell (rows in
    # `sources` order), each cell's quantity (an index into `quantities`) and each quantity's first cell.
    interior: tuple[tuple[tuple[str, ...], ...], ...]
    summing: sparse.csr_matrix
    quantities: tuple[Quantity, ...]
    quantity_of: np.ndarray
    first_source: np.ndarray
    ref_index: Mapping[CellRef, int]  # position in `ref_order`
    spans: Mapping[str, tuple[int, int]]  # per table: its cells' first position and end in `ref_order`
    refs_of: Mapping[Quantity, tuple[int, ...]]  # per quantity: the positions of its cells
    shape: _Shape  # what it was built from: each table's name, dimensions and categories
    keys: tuple[tuple[str, ...], ...]  # each published cell's key, in `ref_order`
    # Each quantity's place in the order of ``repr(sorted(q))``, the tie-break of every choice between
    # cells (worked out once: a national build breaks millions of ties).
    order: Mapping[Quantity, int]
    quantity_list: tuple[int, ...]  # `quantity_of` as ints
    key_lists: list[list[str]]  # `keys` as lists, the form a published body's keys come back in from JSON
    rank: tuple[int, ...]  # each cell's place in the cells' sorted order (`ref_order` positions)
    index_of: Mapping[Quantity, int]  # position in `quantities`
    arrays: _LineArrays  # the lines as arrays, for suppressing many feeds of this layout at once
    unset: tuple[None, ...]  # a None per cell: the reasons of a feed with nothing hidden
    names: list[str]  # the tables' names, in order
    last_of: tuple[int, ...]  # each quantity's last cell (a position in `ref_order`), in `quantities` order
    sizes: list[int]  # each table's number of published cells, in order


@dataclass(frozen=True)
class _Structure:
    layout: _Layout
    sums: list[int]  # the count of every published cell, in `ref_order`
    by_index: list[int]  # each quantity's count, in the order of `layout.quantities`

    @functools.cached_property
    def value(self) -> Mapping[Quantity, int]:
        """Each quantity's count, made only where asked for: a feed with nothing to protect and a later
        revision never ask (a national month counts ~22,000 populations, most of them neither)."""
        return dict(zip(self.layout.quantities, self.by_index, strict=True))

    @property
    def refs(self) -> Mapping[CellRef, Quantity]:
        return self.layout.refs

    @property
    def ref_order(self) -> tuple[CellRef, ...]:
        return self.layout.ref_order

    @property
    def lines(self) -> tuple[_Line, ...]:
        return self.layout.lines

    @property
    def lines_of(self) -> Mapping[Quantity, tuple[int, ...]]:
        return self.layout.lines_of


def _quantity(dims: tuple[str, ...], key: tuple[str, ...]) -> Quantity:
    return frozenset((d, c) for d, c in zip(dims, key, strict=True) if c != TOTAL)


_Shape = tuple[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]], ...]


@functools.lru_cache(maxsize=64)
def _layout(shape: _Shape) -> _Layout:
    refs: dict[CellRef, Quantity] = {}
    sources: list[tuple[int, CellRef, tuple[tuple[str, ...], ...]]] = []
    lines: list[_Line] = []
    line_keys: set[tuple[Quantity, frozenset[Quantity]]] = set()

    def publish(
        t: int, name: str, dims: tuple[str, ...], key: tuple[str, ...], keys: list[tuple[str, ...]]
    ) -> Quantity:
        ref = CellRef(name, key)
        refs[ref] = q = _quantity(dims, key)
        sources.append((t, ref, tuple(keys)))
        return q

    def add_line(total: Quantity, parts: list[Quantity]) -> None:
        k = (total, frozenset(parts))
        if k not in line_keys:
            line_keys.add(k)
            lines.append(_Line(total, tuple(parts)))

    for t, (name, dims, axes) in enumerate(shape):
        if len(dims) == 1:
            parts = [publish(t, name, dims, (c,), [(c,)]) for c in axes[0]]
            add_line(publish(t, name, dims, (TOTAL,), [(c,) for c in axes[0]]), parts)
            continue
        rows, cols = axes
        interior = {(r, c): publish(t, name, dims, (r, c), [(r, c)]) for r in rows for c in cols}
        row_tot = {r: publish(t, name, dims, (r, TOTAL), [(r, c) for c in cols]) for r in rows}
        col_tot = {c: publish(t, name, dims, (TOTAL, c), [(r, c) for r in rows]) for c in cols}
        grand = publish(t, name, dims, (TOTAL, TOTAL), [(r, c) for r in rows for c in cols])
        for r in rows:
            add_line(row_tot[r], [interior[(r, c)] for c in cols])
        for c in cols:
            add_line(col_tot[c], [interior[(r, c)] for r in rows])
        add_line(grand, list(row_tot.values()))
        add_line(grand, list(col_tot.values()))
    lines_of: dict[Quantity, list[int]] = {}
    for i, line in enumerate(lines):
        for q in line.members:
            lines_of.setdefault(q, []).append(i)
    interior_keys = tuple(tuple(_product(list(axes))) for _, _, axes in shape)
    offsets = np.cumsum([0, *(len(keys) for keys in interior_keys)]).tolist()
    column = {(t, key): offsets[t] + i for t, keys in enumerate(interior_keys) for i, key in enumerate(keys)}
    sum_rows: list[int] = []
    sum_cols: list[int] = []
    quantity_index: dict[Quantity, int] = {}
    quantity_of: list[int] = []
    first_source: list[int] = []
    for n, (t, ref, keys) in enumerate(sources):
        for key in keys:
            sum_rows.append(n)
            sum_cols.append(column[(t, key)])
        q = refs[ref]
        if q not in quantity_index:
            quantity_index[q] = len(quantity_index)
            first_source.append(n)
        quantity_of.append(quantity_index[q])
    summing = sparse.csr_matrix(
        (np.ones(len(sum_rows), dtype=np.int64), (sum_rows, sum_cols)), shape=(len(sources), offsets[-1])
    )
    spans: dict[str, tuple[int, int]] = {}
    refs_of: dict[Quantity, list[int]] = {}
    for n, ref in enumerate(refs):
        first, _ = spans.get(ref.table, (n, n))
        spans[ref.table] = (first, n + 1)
        refs_of.setdefault(refs[ref], []).append(n)
    return _Layout(
        refs=MappingProxyType(refs),
        ref_order=tuple(refs),
        sources=tuple(sources),
        lines=tuple(lines),
        lines_of=MappingProxyType({q: tuple(v) for q, v in lines_of.items()}),
        interior=interior_keys,
        summing=summing,
        quantities=tuple(quantity_index),
        quantity_of=np.array(quantity_of, dtype=np.int64),
        first_source=np.array(first_source, dtype=np.int64),
        ref_index=MappingProxyType({ref: n for n, ref in enumerate(refs)}),
        spans=MappingProxyType(spans),
        refs_of=MappingProxyType({q: tuple(v) for q, v in refs_of.items()}),
        shape=shape,
        keys=tuple(ref.key for ref in refs),
        order=MappingProxyType(
            {q: n for n, q in enumerate(sorted(quantity_index, key=lambda q: repr(sorted(q))))}
        ),
        quantity_list=tuple(quantity_of),
        key_lists=[list(ref.key) for ref in refs],
        rank=_ranks(tuple(refs)),
        index_of=MappingProxyType(quantity_index),
        arrays=_line_arrays(tuple(quantity_index), tuple(lines), shape),
        unset=(None,) * len(refs),
        names=[name for name, _, _ in shape],
        last_of=tuple(refs_of[q][-1] for q in quantity_index),
        sizes=[spans[name][1] - spans[name][0] for name, _, _ in shape],
    )


def _ranks(refs: tuple[CellRef, ...]) -> tuple[int, ...]:
    """Each cell's place in ``sorted(refs)``."""
    rank = [0] * len(refs)
    for place, n in enumerate(sorted(range(len(refs)), key=refs.__getitem__)):
        rank[n] = place
    return tuple(rank)


@dataclass(frozen=True)
class _LineArrays:
    """A layout's lines as arrays over its quantities (positions in ``_Layout.quantities``), so that the
    lines of every feed of the layout are closed, and its rectangles found, in one pass of array
    operations (a national build suppresses 1,700 feeds × 7 populations in a handful of layouts)."""

    members: np.ndarray  # lines × widest line: each line's members (total first), padded with `pad`
    rank: np.ndarray  # the same shape: the part of `_choose`'s rank that does not depend on the counts
    incidence: sparse.csr_matrix  # lines × quantities: 1 where the quantity is a member of the line
    lines_of: np.ndarray  # (quantities + 1) × lines: a quantity's row of `incidence`, dense (the pad: 0)
    # The two-way tables' interior quantities as grids stacked by shape (tables × rows × columns), each
    # turned so that it has no more rows than columns (a rectangle is the same either way round): the
    # rectangle check then costs a few array operations per shape, not per table, and rows² × columns.
    grids: tuple[np.ndarray, ...]
    pad: int  # the index standing for "no member" (one past the last quantity)
    order: np.ndarray  # each quantity's place in the tie-break order (`_Layout.order`), by position
    # Per dimension of a two-way table: its margins (k quantities) and every two-way table over it,
    # turned so that the dimension runs down the rows, stacked (tables × k × widest, padded with
    # `pad`), for `_safe_by_moves_many`.
    over: tuple[tuple[np.ndarray, np.ndarray], ...]


# `_choose`'s rank (zero last, parts before the total, then the count, more dimensions first, then the
# tie-break order) packed into one integer: the count above the rest, below "is zero" and "is the total".
_ZERO_BIT, _TOTAL_BIT, _COUNT_SHIFT, _LEN_SHIFT = 61, 60, 22, 20


def _line_arrays(quantities: tuple[Quantity, ...], lines: tuple[_Line, ...], shape: _Shape) -> _LineArrays:
    index = {q: i for i, q in enumerate(quantities)}
    pad = len(quantities)
    if pad >= 1 << _LEN_SHIFT:  # pragma: no cover - layouts have hundreds of quantities
        raise DisclosureError("the layout has too many cells")
    order = {q: n for n, q in enumerate(sorted(quantities, key=lambda q: repr(sorted(q))))}
    width = max((len(line.members) for line in lines), default=1)
    members = np.full((len(lines), width), pad, dtype=np.int64)
    rank = np.zeros((len(lines), width), dtype=np.int64)
    for i, line in enumerate(lines):
        for j, q in enumerate(line.members):
            members[i, j] = index[q]
            rank[i, j] = (int(q == line.total) << _TOTAL_BIT) | ((2 - len(q)) << _LEN_SHIFT) | order[q]
    rows = np.repeat(np.arange(len(lines)), [len(line.members) for line in lines])
    cols = np.array([index[q] for line in lines for q in line.members], dtype=np.int64)
    incidence = sparse.csr_matrix(
        (np.ones(len(cols), dtype=np.int64), (rows, cols)), shape=(len(lines), len(quantities))
    )
    lines_of = np.zeros((pad + 1, len(lines)), dtype=np.int64)
    lines_of[cols, rows] = 1
    two_way = [(dims, axes) for _, dims, axes in shape if len(dims) == 2]
    grid_lists = tuple(
        tuple(tuple(index[_quantity(dims, (r, c))] for c in axes[1]) for r in axes[0])
        for dims, axes in two_way
    )
    stacks: dict[tuple[int, int], list[np.ndarray]] = {}
    for g in grid_lists:
        grid = np.array(g, dtype=np.int64)
        grid = grid.T if grid.shape[0] > grid.shape[1] else grid
        stacks.setdefault(grid.shape, []).append(grid)
    grids = tuple(np.stack(same) for same in stacks.values())
    over: dict[str, list[tuple[int, int, tuple[int, ...]]]] = {}
    margins: dict[str, dict[int, None]] = {}
    for t, (dims, axes) in enumerate(two_way):
        for axis, dim in enumerate(dims):
            ms = tuple(index[frozenset({(dim, c)})] for c in axes[axis])
            over.setdefault(dim, []).append((t, axis, ms))
            margins.setdefault(dim, {}).update(dict.fromkeys(ms))
    by_order = np.array([order[q] for q in quantities], dtype=np.int64)
    # A margin move keeps a one-way table's total line only where both margins are in it: a one-way table
    # over the dimension whose categories are not the two-way tables' (a layout can have that: the counts
    # of the categories it lacks are then 0) would be left unbalanced, and a cell certified that the
    # exact LPs find determined. No margin moves over such a dimension (no caller's layout has one).
    one_way: dict[str, set[frozenset[str]]] = {}
    for _, table_dims, table_axes in shape:
        if len(table_dims) == 1:
            one_way.setdefault(table_dims[0], set()).add(frozenset(table_axes[0]))
    stacked = []
    for dim, tables in over.items():
        ordered = tuple(margins[dim])
        if one_way.get(dim, set()) - {frozenset(c for q in ordered for _, c in quantities[q])}:
            continue
        turned = [np.array(grid_lists[t], dtype=np.int64) for t, _, _ in tables]
        turned = [table.T if axis else table for table, (_, axis, _) in zip(turned, tables, strict=True)]
        block = np.full((len(turned), len(ordered), max(t.shape[1] for t in turned)), pad, dtype=np.int64)
        for n, (table, (_, _, ms)) in enumerate(zip(turned, tables, strict=True)):
            for row, m in enumerate(ms):  # each margin's row (a table without it keeps a row of pads)
                block[n, ordered.index(m), : table.shape[1]] = table[row]
        stacked.append((np.array(ordered, dtype=np.int64), block))
    return _LineArrays(members, rank, incidence, lines_of, grids, pad, by_order, tuple(stacked))


def _close_lines_many(
    layout: _Layout, values: np.ndarray, hidden: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`_close_lines` for many feeds of one layout at once: ``values`` and ``hidden`` hold one feed a
    row (counts and hidden flags of `quantities`); ``hidden`` is updated in place; returns the feeds
    and quantities hidden, in the order each feed hid them.

    The sequential definition visits, among the lines holding exactly one hidden cell, the first in
    the layout's order and hides `_choose`'s member; a line with one hidden member is always pending
    there (it was added when that member was hidden, and visiting it hides a second member), and one
    with another number is skipped. So each step is: per feed, the first line with exactly one
    hidden member, and its visible member of the lowest rank: here for every feed in one step."""
    arrays = layout.arrays
    feeds, size = hidden.shape
    count = np.asarray((arrays.incidence @ hidden.T.astype(np.int64)).T)  # feeds × lines
    padded_values = np.concatenate([values, np.zeros((feeds, 1), dtype=np.int64)], axis=1)
    padded_hidden = np.concatenate([hidden, np.ones((feeds, 1), dtype=bool)], axis=1)
    dynamic = ((padded_values == 0).astype(np.int64) << _ZERO_BIT) | (padded_values << _COUNT_SHIFT)
    added_feed: list[np.ndarray] = []
    added: list[np.ndarray] = []
    active = np.arange(feeds)
    while active.size:
        single = count[active] == 1
        open_ = single.any(axis=1)
        active, single = active[open_], single[open_]
        if not active.size:
            break
        line = single.argmax(axis=1)
        members = arrays.members[line]  # active × width
        rows = active[:, None]
        key = dynamic[rows, members] | arrays.rank[line]
        key[padded_hidden[rows, members]] = np.iinfo(np.int64).max
        chosen = members[np.arange(len(active)), key.argmin(axis=1)]
        padded_hidden[active, chosen] = True
        count[active] += arrays.lines_of[chosen]
        added_feed.append(active)
        added.append(chosen)
    hidden[:] = padded_hidden[:, :size]
    if not added:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(added_feed), np.concatenate(added)


def _safe_by_rectangles_many(
    layout: _Layout, values: np.ndarray, hidden: np.ndarray, threshold: int
) -> np.ndarray:
    """`_safe_by_rectangles` for many feeds of one layout at once (one row each, as
    `_close_lines_many`): which hidden quantities a rectangle of hidden interior cells proves safe.

    For a corner (r, c) of count v and an opposite corner (r2, c2), `_shows_safe` of whole numbers
    reduces to: moving down (by min(v, v[r2, c2])) shows it safe iff v[r2, c2] is at least ``need_down``
    (v itself where 1 <= v < threshold, 1 where v >= threshold, never where v is 0), moving up (by
    min(v[r, c2], v[r2, c])) iff both are at least ``need_up`` (threshold - v where 1 <= v < threshold,
    else 1). So per pair of rows (r, r2) only the best column c2 != c matters: the largest of the
    row's values over the columns hidden in both rows, or the second largest where that is column c
    itself. That is rows × rows × columns per feed and table, not rows² × columns²."""
    safe = np.zeros(hidden.shape, dtype=bool)
    for grid in layout.arrays.grids:  # tables × rows × columns
        h = hidden[:, grid]
        some = np.flatnonzero((h.sum(axis=(2, 3)) >= 4).any(axis=1))
        if not some.size:
            continue
        h, v = h[some], values[some][:, grid]
        r = grid.shape[1]
        # Axes: feed, table, r, r2, c. Both (r, c) and (r2, c) hidden, r2 != r.
        both = h[:, :, :, None, :] & h[:, :, None, :, :] & ~np.eye(r, dtype=bool)[:, :, None]
        small = (v >= 1) & (v < threshold)
        need_down = np.where(v == 0, np.iinfo(np.int64).max, np.where(small, v, 1))[:, :, :, None, :]
        need_up = np.where(small, threshold - v, 1)[:, :, :, None, :]
        far = _best_elsewhere(np.where(both, v[:, :, None, :, :], -1))  # max of v[r2, c2], c2 != c
        near = _best_elsewhere(np.where(both, v[:, :, :, None, :], -1))  # max of v[r, c2], c2 != c
        shows = (far >= need_down) | ((near >= need_up) & (v[:, :, None, :, :] >= need_up))
        found = (both & shows).any(axis=3)
        safe[some[:, None, None, None], grid[None]] |= found
    return safe


def _best_elsewhere(w: np.ndarray) -> np.ndarray:
    """For each position along the last axis, the largest of ``w`` at the other positions."""
    if w.shape[-1] < 2:
        return np.full(w.shape, -1, dtype=w.dtype)
    top = w.argmax(axis=-1)[..., None]
    first = np.take_along_axis(w, top, axis=-1)
    rest = w.copy()
    np.put_along_axis(rest, top, -1, axis=-1)
    second = rest.max(axis=-1, keepdims=True)
    return np.where(np.arange(w.shape[-1]) == top, second, first)


def _safe_by_moves_many(
    layout: _Layout, values: np.ndarray, hidden: np.ndarray, safe: np.ndarray, threshold: int
) -> np.ndarray:
    """Which hidden quantities a whole-number move of hidden cells proves safe, no LP and no component,
    for many feeds of one layout at once (one row each, as `_close_lines_many`; ``safe``: what is
    certified already). The check that runs first, so that a feed whose every hidden cell it (or a
    rectangle) certifies skips the components, the null space and the solver altogether.

    A move adds Δ to hidden cells only, with every line still adding up (A·Δ = 0 over every line of
    the layout) and every cell still ≥ 0: the true counts plus Δ are then a feasible point of the
    audit's LP, so each moved cell's range holds both its count and its moved value, and where that
    pair meets the rule (`_shows_safe`) the exact LPs would find it safe too. Two kinds of move, built
    from alternating paths of hidden interior cells of two-way tables (an interior cell lies on its
    row's line and its column's line only; a cell entered from one end moves the other way from the
    cell before it, so every row and column it passes still adds up):

    * two hidden margins x, y of one dimension, x down by t and y up by t (t = 1, or x's count where
      that is small), where every two-way table over the dimension has a path of hidden cells from
      x's row to y's, the cells entered from a row going down by t (so they must hold t) and those
      entered from a column up by t. x's and y's rows change with their margins, and the margins
      cancel in the dimension's totals. Certified: x, y, and in each table every cell on a *shortest*
      such path: a shortest walk meets no node twice, so it is a path and each cell on it moves by
      exactly t. A cell (a, b) lies on one exactly when dist(x, a) + 1 + dist(b, y) = dist(x, y)
      (entered from row a) or dist(x, b) + 1 + dist(a, y) = dist(x, y) (from column b): the
      distances from every x and to every y (`_distances`) give them all at once.
    * a cycle of hidden interior cells through a cell, in its own table, moved by a step of 1 up to
      the threshold − 1 either way, the cells leaving a row with it and those leaving a column
      against it (`_cycles`): certified, every cell on such a cycle that the move shows safe.

    Main's path-walking check (one shortest path per pair, found per feed in Python, each move
    checked as a point) is kept in ``tests/unit/test_disclosure_moves.py``, which holds this one to
    the exact LPs (and catches broken versions: a path below 0, a cycle through its own column, a
    table skipped) and to certifying every cell that one does."""
    arrays = layout.arrays
    feeds = hidden.shape[0]
    v = np.concatenate([values, np.zeros((feeds, 1), dtype=np.int64)], axis=1)
    h = np.concatenate([hidden, np.zeros((feeds, 1), dtype=bool)], axis=1)
    found = np.zeros(h.shape, dtype=bool)
    open_ = h & ~np.concatenate([safe, np.ones((feeds, 1), dtype=bool)], axis=1)  # not yet certified
    for ms, block in arrays.over:  # tables × k × m: the dimension's categories down the rows
        hm = h[:, ms]
        # Feeds with two hidden margins here and a cell a move here could still certify.
        some = np.flatnonzero(
            (hm.sum(axis=1) >= 2) & (open_[:, ms].any(axis=1) | open_[:, block].any(axis=(1, 2, 3)))
        )
        if not some.size:
            continue
        m = block.shape[2]
        hm, vm = hm[some], v[some][:, ms]
        hb, vb, ob = h[some][:, block], v[some][:, block], open_[some][:, block]
        # Each row's cells as the bits of an integer (column b: bit b), so that a step of a path
        # search is a few operations per row, not per cell.
        bit = 1 << np.arange(m, dtype=np.int64)
        held = (hb * bit).sum(axis=-1)
        for t in range(1, threshold):
            start_f, start_x = np.nonzero(hm & ((vm == t) | ((vm >= 1) if t == 1 else False)))
            if not start_f.size:
                continue
            down = hb & (vb >= t)
            enough = (down * bit).sum(axis=-1)
            rows, cols = _distances(enough[start_f], held[start_f], start_x)  # from x
            # Pairs: x and every other hidden margin y it reaches in every table.
            reached = (rows < _FAR).all(axis=1) & hm[start_f]
            reached[np.arange(len(start_f)), start_x] = False
            s_at, y = np.nonzero(reached)
            if not s_at.size:
                continue
            f, x = start_f[s_at], start_x[s_at]
            for end, moved in ((x, vm[f, x] - t), (y, vm[f, y] + t)):
                shows = _shows_safe_many(vm[f, end], moved, threshold)
                found[some[f[shows]], ms[end[shows]]] = True
            # Each cell of a table on a shortest path from x to y there: (a, b) entered from its row
            # (down by t) where dist(x, a) + 1 + dist(b, y) = dist(x, y), from its column (up by t)
            # where dist(x, b) + 1 + dist(a, y) = dist(x, y); only those not certified yet, and
            # only where the move shows them safe.
            takes = ((ob & down & _shows_safe_many(vb, vb - t, threshold)) * bit).sum(axis=-1)
            gives = ((ob & _shows_safe_many(vb, vb + t, threshold)) * bit).sum(axis=-1)
            wanted = (takes[f] | gives[f]).any(axis=(1, 2))
            if not wanted.any():
                continue
            s_at, y, f = s_at[wanted], y[wanted], f[wanted]
            ends = np.zeros(hm.shape, dtype=np.int64)  # each y's case in the search back from it
            ends[f, y] = 1
            end_f, end_y = np.nonzero(ends)
            ends[end_f, end_y] = np.arange(len(end_f))
            end_at = ends[f, y]
            back_rows, back_cols = _distances(held[end_f], enough[end_f], end_y)  # to y
            length = rows[s_at, :, y][:, :, None]  # pair × table
            on = _layer(back_cols, end_at, length - 1 - rows[s_at]) & takes[f]
            on |= _layer(cols, s_at, length - 1 - back_rows[end_at]) & gives[f]
            p, table, a = np.nonzero(on)
            n, b = np.nonzero((on[p, table, a][:, None] & bit) != 0)
            found[some[f[p[n]]], block[table[n], a[n], b]] = True
    left = h & ~found
    left[:, : hidden.shape[1]] &= ~safe
    for grid in arrays.grids:  # tables × k × n, k ≤ n
        some = np.flatnonzero(left[:, grid].any(axis=(1, 2, 3)))
        if not some.size:
            continue
        hg, vg, need = h[some][:, grid], v[some][:, grid], left[some][:, grid]
        for step in range(1, threshold):
            for move in (-step, step):
                # The cells such a cycle would show safe (the cycle taking them down by the step or
                # up by it), and the feeds that have one.
                shown = need & _shows_safe_many(vg, vg + move, threshold) & (vg + move >= 0)
                rows_of = np.flatnonzero(shown.any(axis=(1, 2, 3)))
                if not rows_of.size:
                    continue
                held = hg[rows_of]
                enough = held & (vg[rows_of] >= step)
                # A cell leaving a row moves as the cell it is checked for, one leaving a column
                # against it; those moved down must hold the step.
                with_cell = _cycles(enough, held) if move < 0 else _cycles(held, enough)
                f, table, a, b = np.nonzero(with_cell & shown[rows_of])
                found[some[rows_of[f]], grid[table, a, b]] = True
    return found[:, : hidden.shape[1]] & hidden


_FAR = 1 << 20  # no path


def _distances(
    out_edges: np.ndarray, in_edges: np.ndarray, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shortest alternating paths in a stack of tables (each case: tables × k rows, each row's cells
    as bits): a row steps to a column along a cell of ``out_edges``, a column to a row along a cell
    of ``in_edges``. Returns, per case, the length of the shortest path from row ``start`` to every
    row (case × tables × k, `_FAR` where there is none) and the columns at each length (case × tables
    × lengths, as bits). With the edges swapped: the lengths of the shortest paths from every row and
    column *to* row ``start``."""
    cases, tables, k = out_edges.shape
    frontier = np.zeros((cases, tables, k), dtype=bool)
    frontier[np.arange(cases), :, start] = True
    to_rows = np.where(frontier, 0, _FAR)
    to_cols = np.zeros((cases, tables, 2 * k + 2), dtype=np.int64)
    seen_rows, seen_cols = frontier.copy(), np.zeros((cases, tables), dtype=np.int64)
    length = 1
    while True:
        reached = np.bitwise_or.reduce(np.where(frontier, out_edges, 0), axis=-1) & ~seen_cols
        if not reached.any():
            break
        seen_cols |= reached
        to_cols[..., length] = reached
        frontier = ((in_edges & reached[..., None]) != 0) & ~seen_rows
        if not frontier.any():
            break
        seen_rows |= frontier
        to_rows[frontier] = length + 1
        length += 2
    return to_rows, to_cols


def _layer(layers: np.ndarray, case: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``layers[case[p], table, at[p, table, row]]`` (layers: cases × tables × lengths), 0 where
    ``at`` is not a length."""
    _, tables, lengths = layers.shape
    valid = (at >= 0) & (at < lengths)
    flat = (case[:, None, None] * tables + np.arange(tables)[:, None]) * lengths + np.where(valid, at, 0)
    return np.where(valid, layers.reshape(-1)[flat], 0)


def _cycles(leave_row: np.ndarray, leave_col: np.ndarray) -> np.ndarray:
    """For a stack of tables (..., k rows, n columns): which cells (a, b) of ``leave_row`` lie on a
    cycle that leaves every row along a cell of ``leave_row`` and every column along a cell of
    ``leave_col``: some cell (a1, b) of ``leave_col``, a1 ≠ a, from which row a is reached without
    passing column b (a path a1 → b' → a2 → … → a, b' ≠ b)."""
    *_, k, n = leave_row.shape
    bit = 1 << np.arange(n, dtype=np.int64)
    # Row a reaches row a2 in two steps through the columns of both (bits), here other than b.
    through = (leave_row * bit).sum(axis=-1)[..., :, None] & (leave_col * bit).sum(axis=-1)[..., None, :]
    reach = ((through[..., None, :, :] & ~bit[:, None, None]) != 0) | np.eye(k, dtype=bool)  # ..., b, a, a2
    for _ in range(max(k - 2, 0).bit_length()):  # paths of up to k - 1 steps by squaring
        reach = (reach[..., :, :, None] & reach[..., None, :, :]).any(axis=-2)
    # cycle[..., b, a]: some a1 ≠ a with (a1, b) leaving its column, reaching a.
    start = np.swapaxes(leave_col, -1, -2)[..., :, :, None] & ~np.eye(k, dtype=bool)  # ..., b, a1, a
    cycle = (start & reach).any(axis=-2)
    return np.swapaxes(cycle, -1, -2) & leave_row


def _shows_safe_many(true: np.ndarray, moved: np.ndarray, threshold: int) -> np.ndarray:
    """`_shows_safe` of whole-number points, elementwise."""
    return (
        ((moved <= 0) & (true >= 1))
        | ((moved >= threshold) & (true < threshold))
        | ((moved != true) & ((true == 0) | (true >= threshold)))
    )


def _structure(tables: Sequence[Table]) -> _Structure:
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise DisclosureError("two tables of the feed have the same name")
    shape = []
    for table in tables:
        _check_dims(table.dims, f"table {table.name!r}")
        axes = table.categories()
        for axis in axes:
            if TOTAL in axis:
                raise DisclosureError(f"table {table.name!r} has a category named {TOTAL!r}, the total label")
        if len(table.cells) != math.prod(len(a) for a in axes):
            raise DisclosureError(
                f"table {table.name!r} does not list every category combination (zeros included)"
            )
        values = table.cells.values()
        if set(map(type, values)) - {int} or min(values, default=0) < 0:  # the loop only to say which
            for key, v in table.cells.items():
                if not isinstance(v, int) or v < 0:
                    raise DisclosureError(f"{CellRef(table.name, key)} is {v!r}, not a count")
        shape.append((table.name, table.dims, axes))
    layout = _layout(tuple(shape))
    # Each table's counts in the layout's order of its keys: as listed, where the cells are listed in
    # that order (as `tables_from_counts` lists them).
    counts = np.fromiter(
        itertools.chain.from_iterable(
            table.cells.values() if tuple(table.cells) == keys else [table.cells[key] for key in keys]
            for table, keys in zip(tables, layout.interior, strict=True)
        ),
        dtype=np.int64,
        count=layout.summing.shape[1],
    )
    sums = layout.summing @ counts
    first = sums[layout.first_source]
    mismatch = np.flatnonzero(sums != first[layout.quantity_of])
    if mismatch.size:
        r = int(mismatch[0])
        ref = layout.sources[r][1]
        where = layout.sources[int(layout.first_source[layout.quantity_of[r]])][1]
        raise DisclosureError(
            f"{ref} is {int(sums[r])} but {where} counts the same placements and is "
            f"{int(first[layout.quantity_of[r]])}: the tables of one feed must describe the same placements"
        )
    values = first.tolist()
    return _Structure(layout, sums.tolist(), values)


def counts(tables: Sequence[Table]) -> dict[CellRef, int]:
    """The true count of every cell the tables publish (interior, margins, grand totals), in the
    order `suppress` publishes them; checks the tables as `suppress` does."""
    s = _structure(tables)
    return dict(zip(s.ref_order, s.sums, strict=True))


# ---------------------------------------------------------------------------------------------------
# Suppression


def suppress(
    tables: Sequence[Table],
    threshold: int = DEFAULT_THRESHOLD,
    previously_suppressed: frozenset[CellRef] = frozenset(),
) -> SuppressedFeed:
    """Decide, for every published cell of one feed, its value or None (suppressed) and why.

    Zero cells are published as 0: an empty category singles nobody out, and hiding zeros would blank
    most of a small site's feed. Their cost is that an attacker knows them, so complementary
    suppression avoids relying on zero cells and the audit treats every published 0 as known.

    `previously_suppressed` keeps cells hidden in earlier revisions of the same feed (e.g. a month
    re-sent after late placements) hidden now, so that laying revisions side by side does not reveal
    a value that one revision hid. Limits: this protects the cells hidden before, not the difference
    between revisions: if a few late placements change published cells, the change itself describes
    those few people, and cells hidden once stay hidden for good, so suppression only grows.
    """
    return suppress_many([(tables, previously_suppressed)], threshold)[0]


def suppress_many(
    feeds: Sequence[tuple[Sequence[Table] | Counted, frozenset[CellRef]]], threshold: int = DEFAULT_THRESHOLD
) -> list[SuppressedFeed]:
    """`suppress` for several independent feeds (tables, previously suppressed cells) at once.

    Each feed gets exactly the decisions `suppress` would give it alone; the feeds only share the
    solver calls of their audits: the linear programs of all feeds at the same step are stacked into
    one call (they are independent blocks), because a solver call's fixed cost dwarfs these LPs.
    """
    if threshold < 1:
        raise DisclosureError(f"threshold {threshold} is below 1")
    counted = [_checked(tables) for tables, _ in feeds]
    starts = _first_rounds(counted, [prev for _, prev in feeds], threshold)
    return _run_batched(
        [_suppress_steps(c, threshold, start) for c, start in zip(counted, starts, strict=True)]
    )


# A feed's first round: its reasons, hidden and certified cells, or the feed as published where the
# first round's certificates already cover every hidden cell (the audit would end there).
_Start = tuple[dict["Quantity", SuppressionReason], set["Quantity"], set["Quantity"], "SuppressedFeed | None"]


def _first_rounds(
    counted: Sequence[Counted], previously: Sequence[frozenset[CellRef]], threshold: int
) -> list[_Start]:
    """Each feed's first round up to the audit's LPs: the primary and previously hidden cells, the
    lines closed around them, and the cells rectangles prove safe, for all the feeds of a layout at
    once (`_close_lines_many`, `_safe_by_rectangles_many`). Returns the reasons, hidden and safe sets."""
    # Each feed's small counts, found for all the feeds of a layout at once (most have none).
    by_layout: dict[int, list[int]] = {}
    for n, c in enumerate(counted):
        by_layout.setdefault(id(c.structure.layout), []).append(n)
    tables: list[tuple[_Layout, list[int], np.ndarray]] = []
    small: list[list[int]] = [[] for _ in counted]
    for members in by_layout.values():
        values = np.array([counted[n].structure.by_index for n in members], dtype=np.int64)
        rows, columns = np.nonzero((values >= 1) & (values < threshold))
        for row, i in zip(rows.tolist(), columns.tolist(), strict=True):
            small[members[row]].append(i)
        tables.append((counted[members[0]].structure.layout, members, values))
    starts: list[_Start] = []
    primary, complementary = SuppressionReason.PRIMARY, SuppressionReason.COMPLEMENTARY
    for n, (c, previously_suppressed) in enumerate(zip(counted, previously, strict=True)):
        s = c.structure
        quantities = s.layout.quantities
        reason = dict.fromkeys(map(quantities.__getitem__, small[n]), primary)
        for ref in sorted(previously_suppressed):
            q_prev = s.refs.get(ref)
            if q_prev is None:
                raise DisclosureError(
                    f"{ref} was suppressed in an earlier revision but is not in this feed: the feed layout "
                    "changed, so earlier suppressions cannot be carried over"
                )
            reason.setdefault(q_prev, SuppressionReason.PREVIOUS_REVISION)
        starts.append((reason, set(reason), set(), None))
    for layout, everyone, every_value in tables:
        # Only feeds with a small cell or one hidden before: the others have nothing to protect.
        protect = [row for row, n in enumerate(everyone) if starts[n][0]]
        if not protect:
            continue
        members = [everyone[row] for row in protect]
        values = every_value[protect]
        hidden = np.zeros(values.shape, dtype=bool)
        for row, n in enumerate(members):
            hidden[row, [layout.index_of[q] for q in starts[n][0]]] = True
        # Each quantity's reason as a code (`_REASONS`): small counts are primary, the others hidden
        # so far were hidden before, those the lines hide are complementary.
        code = np.where(hidden, 2, 0).astype(np.int8)
        code[(values >= 1) & (values < threshold)] = 1
        _close_lines_many(layout, values, hidden)
        code[hidden & (code == 0)] = 3
        safe = _safe_by_rectangles_many(layout, values, hidden, threshold)
        # The moves check for every feed with a hidden cell rectangles leave, all at once.
        need = np.flatnonzero((hidden & ~safe).any(axis=1))
        if need.size:
            safe[need] |= _safe_by_moves_many(layout, values[need], hidden[need], safe[need], threshold)
        # A feed whose every hidden cell is certified (most) is published here, from the codes.
        clean = ~(hidden & ~safe).any(axis=1)
        rows = np.flatnonzero(clean)
        published = _published_many(
            layout, [counted[members[r]] for r in rows], values[rows], code[rows], threshold
        )
        for row, feed in zip(rows.tolist(), published, strict=True):
            starts[members[row]] = (starts[members[row]][0], set(), set(), feed)
        quantities = layout.quantities
        for row in np.flatnonzero(~clean).tolist():
            n = members[row]
            reason, hid, certified, _ = starts[n]
            for q in map(quantities.__getitem__, np.flatnonzero(hidden[row]).tolist()):
                hid.add(q)
                reason.setdefault(q, complementary)
            certified.update(map(quantities.__getitem__, np.flatnonzero(safe[row]).tolist()))
    return starts


def _checked(tables: Sequence[Table] | Counted) -> Counted:
    """Tables with their structure (`_structure` checks them), unless `count_many` made both."""
    return tables if isinstance(tables, Counted) else Counted(tuple(tables), _structure(tables))


def revise(
    tables: Sequence[Table] | Counted, threshold: int, previous: Mapping[CellRef, int | None]
) -> SuppressedFeed:
    """Revision N+1 of a feed whose revision N published ``previous`` (cell -> value, None = hidden).

    Decided per *quantity* (what a cell counts), never per table cell: a count appears in several
    tables (a one-way table and the margin of every two-way table over the same dimension), and it is
    either published in all of them or hidden in all of them. Hidden: every quantity hidden in
    revision N, every quantity whose count changed since, and every quantity revision N did not have.
    Everything else is published with the value revision N published.

    Why that is enough when the layout is the same as revision N's (the feed fixes its layout at
    revision 1, see ``domain.feed``): for an attacker holding every revision, "revision N+1 equals
    revision N" is a completion consistent with everything published (the published cells are
    revision N's values; later revisions only add people, and equal counts add none), and so is the
    truth. A quantity hidden in revision N keeps at least the range revision N allowed; a changed one
    takes both its revision-N value (published, so 0 or at least the threshold, or hidden and
    protected) and its new value. If the layout differs (a revision N built before layouts were
    fixed), that argument does not hold for new quantities, so the revision is suppressed afresh with
    the audit, every quantity hidden or changed above being hidden from the start.
    """
    counted = _checked(tables)
    s = counted.structure
    before: dict[Quantity, int | None] = {}
    for ref, v in previous.items():
        q = s.refs.get(ref)
        if q is None or (q in before and before[q] is None):
            continue
        before[q] = v
    reason: dict[Quantity, SuppressionReason] = {}
    for q, v in s.value.items():
        if q not in before:
            reason[q] = SuppressionReason.NEW
        elif before[q] is None:
            reason[q] = SuppressionReason.PREVIOUS_REVISION
        elif before[q] != v:
            reason[q] = SuppressionReason.CHANGED
    # ``previous`` may hold other populations' cells too; what matters is that every cell of these
    # tables was published (or hidden) by revision N.
    same_layout = all(ref in previous for ref in s.refs)
    if not same_layout:
        forced = frozenset(ref for ref in s.ref_order if s.refs[ref] in reason)
        fresh = suppress_many([(counted, forced)], threshold)[0]
        return SuppressedFeed(
            fresh.tables,
            threshold,
            MappingProxyType(
                {
                    ref: PublishedCell(ref, None, reason.get(s.refs[ref], c.reason)) if c.value is None else c
                    for ref, c in fresh.cells.items()
                }
            ),
        )
    return _published(counted, threshold, s, reason)


def revise_published(
    tables: Sequence[Table] | Counted, threshold: int, published: Sequence[Mapping[str, Any]]
) -> SuppressedFeed:
    """`revise` against revision N's tables as it published them (each a ``name`` and its ``cells``,
    ``[key, value or None, reason]`` as `SuppressedFeed.rows` gives them). Where they are this
    layout's tables with the cells in its order (a feed's later revisions: the layout is fixed at
    revision 1), revision N's values are read in that order, not looked up by name (a national month
    revises 1,400 feeds of ~600 cells); otherwise by name, as `revise`."""
    counted = _checked(tables)
    s = counted.structure
    layout = s.layout
    values = _aligned(layout, published)
    if values is None:
        previous = {CellRef(t["name"], tuple(key)): v for t in published for key, v, _ in t["cells"]}
        return revise(counted, threshold, previous)
    # As `revise` with every cell of the layout present: a quantity is hidden before if any of its
    # cells was, else it had the value its last cell published.
    reason: dict[Quantity, SuppressionReason] = {}
    before: list[object]
    if None not in values:  # nothing hidden before (most populations): each quantity's last cell's value
        before = list(map(values.__getitem__, layout.last_of))
        if before == s.by_index:  # and nothing changed since (most): every cell as published before
            return _published(counted, threshold, s, reason, before=values)
    else:
        unset = object()
        before = [unset] * len(layout.quantities)
        for q, v in zip(layout.quantity_list, values, strict=True):
            if before[q] is not None:
                before[q] = v
    for quantity, v, b in zip(layout.quantities, s.by_index, before, strict=True):
        if b is None:
            reason[quantity] = SuppressionReason.PREVIOUS_REVISION
        elif b != v:
            reason[quantity] = SuppressionReason.CHANGED
    return _published(counted, threshold, s, reason, before=values)


def _aligned(layout: _Layout, published: Sequence[Mapping[str, Any]]) -> list[Any] | None:
    """The values ``published`` gives the layout's cells in its order, if it has the layout's tables
    with their cells in that order; else None."""
    if [t["name"] for t in published] != layout.names:
        return None
    tables = list(map(_CELLS, published))
    if list(map(len, tables)) != layout.sizes:  # so that each table's cells are its own below
        return None
    cells = list(itertools.chain.from_iterable(tables))
    # Keys as a body holds them (JSON arrays: lists) or as composed (tuples): compared without making
    # a tuple of each (a national month reads ~900,000 cells back), all the tables' at once.
    found = list(map(_KEY, cells))
    if found != layout.key_lists and list(map(tuple, found)) != list(layout.keys):
        return None
    return list(map(_VALUE, cells))


_KEY, _VALUE, _CELLS = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter("cells")


# Solve requests: (component, objective, cap) per LP; the answer is one optimal point per LP.
_Request = list[tuple["_Component", np.ndarray, float]]
_Steps = Generator[_Request, list[np.ndarray], _T]
# How many feeds share a solver call: enough to amortise its fixed cost, few enough that the stacked
# LP stays small (the simplex work per iteration grows with the stack). Since the shortcuts, only a few
# feeds of a batch ask for LPs at all (a national month: 73 components, 464 LPs), so a batch is a
# builder's chunk: 138 -> 76 solver calls, 1.3 -> 0.8 s. The decisions do not depend on the stacking:
# a probe's point only skips exact LPs that would find the same, and the exact range is unique.
_BATCH = 256


def _run_batched(steps: Sequence[_Steps[_T]]) -> list[_T]:
    """Drive step generators in lockstep, answering each round's requests with one stacked solve."""
    results: list[_T | None] = [None] * len(steps)
    for start in range(0, len(steps), _BATCH):
        requests: dict[int, _Request] = {}
        for i in range(start, min(start + _BATCH, len(steps))):
            try:
                requests[i] = next(steps[i])
            except StopIteration as done:
                results[i] = done.value
        while requests:
            order = list(requests)
            points = _solve_stacked([lp for i in order for lp in requests[i]])
            answered: dict[int, _Request] = {}
            at = 0
            for i in order:
                n = len(requests[i])
                try:
                    answered[i] = steps[i].send(points[at : at + n])
                except StopIteration as done:
                    results[i] = done.value
                at += n
            requests = answered
    return results  # type: ignore[return-value]  # every generator has finished


def _suppress_steps(counted: Counted, threshold: int, start: _Start) -> _Steps[SuppressedFeed]:
    """From the first round's hidden cells (`_first_rounds`): audit, one more complementary
    suppression per exposed cell, lines closed again, until the audit is clean."""
    s = counted.structure
    reason, hidden, safe, ready = start
    if ready is not None:
        return ready
    while hidden:
        exposed = yield from _exposed(s, hidden, threshold, safe)
        exposures = sorted(exposed, key=lambda q: (s.value[q], s.layout.order[q]))
        if not exposures:
            break
        added = False
        for q in exposures:
            # Earlier additions in this round may already have covered q; extra is None once every
            # line around q is hidden.
            extra = _extra_suppression(s, hidden, q)
            if extra is not None:
                hidden.add(extra)
                reason.setdefault(extra, SuppressionReason.COMPLEMENTARY)
                added = True
        if not added:  # pragma: no cover - with every cell hidden, zero is feasible and nothing is pinned
            raise DisclosureError("the feed cannot be protected even with every cell suppressed")
        for q in _close_lines(s, hidden):
            reason.setdefault(q, SuppressionReason.COMPLEMENTARY)
        safe = _certified(s, hidden, threshold, safe)

    return _published(counted, threshold, s, {q: reason[q] for q in hidden})


def _published(
    counted: Counted,
    threshold: int,
    s: _Structure,
    hidden: Mapping[Quantity, SuppressionReason],
    before: Sequence[int | None] | None = None,
) -> SuppressedFeed:
    """Every cell of the feed: hidden with its reason where its quantity is in ``hidden``, else its count."""
    layout = s.layout
    tables = _Tables(counted) if counted._tables is None else counted._tables
    values: list[int | None] = list(s.sums)  # in `ref_order`
    if not hidden:  # most populations of a national month: no reason to write, none to list
        cells = _Cells(layout.ref_order, layout.ref_index, values, layout.unset, layout.keys, layout.rank,
                       layout.unset, [])  # fmt: skip
        return SuppressedFeed(tables, threshold, cells, frozenset(), layout.spans, before)
    reasons: list[SuppressionReason | None] = [None] * len(values)
    why: list[str | None] = [None] * len(values)
    at: list[int] = []
    for q, reason in hidden.items():
        text = _WHY[reason]
        for n in layout.refs_of[q]:
            values[n] = None
            reasons[n] = reason
            why[n] = text
            at.append(n)
    cells = _Cells(layout.ref_order, layout.ref_index, values, reasons, layout.keys, layout.rank, why, at)
    # The hidden cells as a set only where asked for (``SuppressedFeed.suppressed``: they are ``at``).
    return SuppressedFeed(tables, threshold, cells, None, layout.spans, before)


# The reasons by code (0: published), and each reason as published.
_REASONS = np.array(
    [None, SuppressionReason.PRIMARY, SuppressionReason.PREVIOUS_REVISION, SuppressionReason.COMPLEMENTARY],
    dtype=object,
)
_WHY_BY_CODE = np.array([None if r is None else _WHY[r] for r in _REASONS], dtype=object)


def _published_many(
    layout: _Layout, counted: Sequence[Counted], values: np.ndarray, code: np.ndarray, threshold: int
) -> list[SuppressedFeed]:
    """`_published` for many feeds of one layout at once, their hidden quantities and reasons given
    as codes (one row per feed, `_REASONS`; ``values``: each quantity's count): the same cells,
    values, reasons and hidden positions, made as arrays per layout instead of a loop per cell."""
    if not counted:
        return []
    cell_code = code[:, layout.quantity_of]
    hidden = cell_code > 0
    shown = values[:, layout.quantity_of].astype(object)
    shown[hidden] = None
    rows, at = np.nonzero(hidden)
    ends = np.searchsorted(rows, np.arange(1, len(counted)))
    out = []
    for c, published, reasons, why, positions in zip(
        counted,
        shown.tolist(),
        _REASONS[cell_code].tolist(),
        _WHY_BY_CODE[cell_code].tolist(),
        np.split(at, ends),
        strict=True,
    ):
        cells = _Cells(layout.ref_order, layout.ref_index, published, reasons, layout.keys, layout.rank, why,
                       positions.tolist())  # fmt: skip
        tables = _Tables(c) if c._tables is None else c._tables
        out.append(SuppressedFeed(tables, threshold, cells, None, layout.spans, None))
    return out


def _choose(s: _Structure, line: _Line, hidden: set[Quantity]) -> Quantity | None:
    """The cheapest visible member of a line to hide: non-zero before zero, parts before the total
    (hiding a total discloses less but blanks a more useful figure), then the smallest count."""
    best: tuple[tuple[bool, bool, int, int, int], Quantity] | None = None
    order = s.layout.order
    for q in line.members:
        if q in hidden:
            continue
        v = s.value[q]
        # len(q) desc prefers interior cells over margins over the grand total when a line's parts
        # are themselves totals; sorted(q) makes the choice deterministic.
        rank = (v == 0, q == line.total, v, -len(q), order[q])
        if best is None or rank < best[0]:
            best = (rank, q)
    return None if best is None else best[1]


def _close_lines(s: _Structure, hidden: set[Quantity]) -> list[Quantity]:
    """Hide cells until no line has exactly one hidden member; returns the cells it hid (one feed:
    `_close_lines_many`)."""
    values, mask = _arrays(s, hidden)
    _, added = _close_lines_many(s.layout, values, mask)
    out = [s.layout.quantities[i] for i in added.tolist()]
    hidden.update(out)
    return out


def _arrays(s: _Structure, hidden: set[Quantity]) -> tuple[np.ndarray, np.ndarray]:
    """One feed's counts and hidden flags as the rows `_close_lines_many` takes."""
    mask = np.zeros((1, len(s.layout.quantities)), dtype=bool)
    mask[0, [s.layout.index_of[q] for q in hidden]] = True
    return np.array([s.by_index], dtype=np.int64), mask


def _extra_suppression(s: _Structure, hidden: set[Quantity], exposed: Quantity) -> Quantity | None:
    """Hide one more cell near an exposed one, preferring a cell that closes a cycle.

    An exposed cell usually sits on a path of hidden cells rather than a cycle (e.g. two hidden cells
    in its row and column whose own row and column lead nowhere); a value can only move along a cycle,
    so the best extra cell is one whose lines already hold hidden cells of the neighbourhood on two
    sides: the fourth corner of a rectangle. Then the smallest count. Zero cells come last: a hidden
    zero beside known values is pinned at 0 again and tends to cascade into hiding rows of zeros.
    """
    frontier = [exposed]
    near = {exposed}
    seen_lines: set[int] = set()
    candidates: set[Quantity] = set()
    zero_fallback: Quantity | None = None
    depth = 0
    while frontier:
        next_frontier: list[Quantity] = []
        for q in frontier:
            for i in s.lines_of.get(q, ()):
                if i in seen_lines:
                    continue
                seen_lines.add(i)
                for m in s.lines[i].members:
                    if m in hidden:
                        if m not in near:
                            near.add(m)
                            next_frontier.append(m)
                    elif s.value[m] > 0:
                        candidates.add(m)
                    elif zero_fallback is None:
                        zero_fallback = m
        frontier = next_frontier
        depth += 1
        if candidates and depth >= 2:
            break

    def rank(q: Quantity) -> tuple[int, int, int, int]:
        touching = sum(any(m in near for m in s.lines[i].members if m != q) for i in s.lines_of[q])
        return (-min(touching, 2), s.value[q], -len(q), s.layout.order[q])

    if candidates:
        return min(candidates, key=rank)
    return zero_fallback


# ---------------------------------------------------------------------------------------------------
# Audit


def audit(
    tables: Sequence[Table],
    published: Mapping[CellRef, int | None],
    threshold: int = DEFAULT_THRESHOLD,
) -> list[Exposure]:
    """Suppressed cells whose feasible range, given everything published, breaks the protection rule.

    The feasible range is computed from the published values and the additive structure only, as an
    attacker would; the tables' own counts serve to check the published values and to skip cells that
    a feasible point already shows to be safe.
    """
    s = _structure(tables)
    hidden = {s.refs[ref] for ref, v in published.items() if v is None}
    for ref, v in published.items():
        if v is not None and s.value[s.refs[ref]] != v:
            raise DisclosureError(f"{ref} is published as {v} but counts {s.value[s.refs[ref]]}")
    first_ref: dict[Quantity, CellRef] = {}
    for ref in s.ref_order:
        first_ref.setdefault(s.refs[ref], ref)
    exposed = _run_batched([_exposed(s, hidden, threshold)])[0]
    return sorted(
        (Exposure(first_ref[q], lo, hi, rule) for q, (lo, hi, rule) in exposed.items()),
        key=lambda e: e.ref,
    )


def _breach(lo: int, hi: int | None, threshold: int) -> str | None:
    if hi is not None and lo == hi:
        return f"value determined exactly: {lo}"
    if lo >= 1 and hi is not None and hi < threshold:
        return f"known to be between {lo} and {hi}, a small non-zero count"
    return None


_EPS = 1e-6


@dataclass
class _Component:
    """Hidden quantities linked through lines, with their equations A·x = b over the hidden values."""

    members: list[Quantity]
    rows: np.ndarray
    cols: np.ndarray
    coef: np.ndarray
    rhs: np.ndarray


def _components(s: _Structure, hidden: set[Quantity]) -> list[_Component]:
    """The hidden quantities linked through lines, each group with its equations: members in the
    tie-break order, groups in the order of their first member, each group's lines in the layout's
    order (the lines holding one of its members), each line's members total first. As arrays over the
    layout's lines (`_LineArrays`), for one feed."""
    if not hidden:
        return []
    layout = s.layout
    arrays = layout.arrays
    at = np.fromiter(map(layout.index_of.__getitem__, hidden), dtype=np.int64, count=len(hidden))
    marked = np.zeros(arrays.pad + 1, dtype=bool)
    marked[at] = True
    held = marked[arrays.members]  # lines × width: which members are hidden
    lines = np.flatnonzero(held.any(axis=1))
    held, members = held[lines], arrays.members[lines]
    line, slot = np.nonzero(held)  # each line's hidden members, in the line's order
    cell = members[line, slot]
    # Linked through lines: each hidden quantity takes the smallest label on its lines until none
    # changes (as many rounds as the longest chain of lines, a few).
    label = np.arange(arrays.pad + 1)
    starts = np.flatnonzero(np.r_[True, line[1:] != line[:-1]])
    while True:
        lowest = np.minimum.reduceat(label[cell], starts)[line]
        if (lowest >= label[cell]).all():
            break
        np.minimum.at(label, cell, lowest)
    first = members[np.arange(len(lines)), held.argmax(axis=1)]
    ordered = at[np.argsort(arrays.order[at], kind="stable")]
    groups = label[ordered]
    place = np.zeros(arrays.pad, dtype=np.int64)  # each hidden quantity's position in its group
    values = np.append(np.asarray(s.by_index, dtype=np.float64), 0.0)  # the pad counts 0
    sign = np.where(np.arange(members.shape[1]) == 0, 1.0, -1.0)
    # Each line's right-hand side: what its published members add up to, moved across.
    rhs = 0.0 - (np.where(held, 0.0, values[members]) * sign).sum(axis=1)
    line_group = label[first]
    entry_group = line_group[line]
    quantities = layout.quantities
    out = []
    for g in dict.fromkeys(groups.tolist()):  # in the order of each group's first member
        mine = ordered[groups == g]
        place[mine] = np.arange(len(mine))
        own = np.flatnonzero(line_group == g)
        row = np.zeros(len(lines), dtype=np.int64)
        row[own] = np.arange(len(own))
        entries = entry_group == g
        out.append(
            _Component(
                [quantities[i] for i in mine.tolist()],
                row[line[entries]],
                place[cell[entries]],
                sign[slot[entries]],
                rhs[own],
            )
        )
    return out


def _solve_stacked(problems: _Request) -> list[np.ndarray]:
    """Solve several LPs (minimise c·x s.t. A·x = b, 0 ≤ x ≤ cap) in one solver call.

    The problems are independent, so stacking them block-diagonally gives each block its own optimum;
    one call instead of one per problem matters because the solver's fixed cost per call dominates
    these small LPs. The cap keeps every block bounded (one unbounded block would leave the whole
    stack without a solution); it lies far above any real count, so reaching it only means "no
    useful upper bound", and it can only raise minima, which errs towards more suppression.
    """
    rows, cols, coef, rhs, objective, caps = [], [], [], [], [], []
    n_rows = n_cols = 0
    offsets = []
    for comp, c, cap in problems:
        rows.append(comp.rows + n_rows)
        cols.append(comp.cols + n_cols)
        coef.append(comp.coef)
        rhs.append(comp.rhs)
        objective.append(c)
        caps.append(np.full(len(comp.members), cap))
        offsets.append(n_cols)
        n_rows += len(comp.rhs)
        n_cols += len(comp.members)
    a_eq = sparse.csr_matrix(
        (np.concatenate(coef), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, n_cols)
    )
    result = linprog(
        np.concatenate(objective),
        A_eq=a_eq,
        b_eq=np.concatenate(rhs),
        bounds=np.column_stack([np.zeros(n_cols), np.concatenate(caps)]),
        method="highs",
        # Presolve costs more than it saves on LPs this small (measured: about a third of the time).
        options={"presolve": False},
    )
    if result.status != 0:  # pragma: no cover - the true counts are always a feasible point
        raise DisclosureError(f"disclosure audit LP failed: {result.message}")
    return [result.x[o : o + len(comp.members)] for o, (comp, _, _) in zip(offsets, problems, strict=True)]


def _shows_safe(true: int, y: float, threshold: int) -> bool:
    """Whether the feasible point value y proves the protection rule for a cell whose count is true."""
    if y <= _EPS and true >= 1:
        return True  # the range holds 0 and the true value, so it is neither a point nor small-only
    if y >= threshold - _EPS and true < threshold:
        return True  # the range holds a value >= threshold and the true value
    # A cell whose count is 0 or at least the threshold only has to be shown not to be pinned.
    return abs(y - true) >= 1 - _EPS and (true == 0 or true >= threshold)


def _safe_by_rectangles(s: _Structure, hidden: set[Quantity], threshold: int) -> set[Quantity]:
    """Hidden interior cells of two-way tables that a rectangle of hidden cells proves safe, no LP.

    Adding t to two opposite corners of a rectangle of hidden interior cells and taking t from the
    other two changes no row, column or margin (an interior cell lies on no other line), so every such
    t that keeps the corners non-negative gives a feasible point. Each corner's range therefore holds
    its count moved by −min(itself, opposite corner) … +min(the two other corners); where that range
    already meets the rule (``_shows_safe``), the exact LPs would find it safe too, so they are skipped.
    One feed: `_safe_by_rectangles_many`.
    """
    values, mask = _arrays(s, hidden)
    safe = _safe_by_rectangles_many(s.layout, values, mask, threshold)[0]
    return {s.layout.quantities[i] for i in np.flatnonzero(safe).tolist()}


def _certified(s: _Structure, hidden: set[Quantity], threshold: int, known: set[Quantity]) -> set[Quantity]:
    """The hidden cells rectangles and whole-number moves prove safe, for one feed (the first round
    works them out for many feeds at once: `_first_rounds`), besides ``known``: cells certified in an
    earlier round of the same feed. Hiding more cells keeps those safe (their feasible point, with the
    newly hidden cells at their counts, is still one), so only the others are looked at again."""
    values, mask = _arrays(s, hidden)
    safe = _safe_by_rectangles_many(s.layout, values, mask, threshold)
    safe[0, [s.layout.index_of[q] for q in known]] = True
    if (mask & ~safe).any():
        safe |= _safe_by_moves_many(s.layout, values, mask, safe, threshold)
    return {s.layout.quantities[i] for i in np.flatnonzero(safe[0] & mask[0]).tolist()}


def _null_space(comp: _Component) -> np.ndarray:
    """A basis of the null space of the component's equations (columns, one per free variable of the
    reduced row echelon form). Sparse elimination in plain Python: each equation holds a few cells,
    and numpy's per-call cost, LAPACK's SVD and BLAS's threads all cost far more on these systems
    (measured 1-300 ms a component on a busy 2-core host against well under 1 ms)."""
    n = len(comp.members)
    equations: list[dict[int, float]] = [{} for _ in comp.rhs]
    for r, c, v in zip(comp.rows.tolist(), comp.cols.tolist(), comp.coef.tolist(), strict=True):
        equations[r][c] = equations[r].get(c, 0.0) + v
    holding: dict[int, set[int]] = {}  # cell -> the equations that hold it
    for i, eq in enumerate(equations):
        for c in eq:
            if (held := holding.get(c)) is None:
                holding[c] = {i}
            else:
                held.add(i)
    pivot_row: dict[int, int] = {}  # pivot cell -> its (normalised) equation
    used: set[int] = set()
    for col in range(n):
        candidates = [i for i in holding.get(col, ()) if i not in used and abs(equations[i][col]) > 1e-9]
        if not candidates:
            continue
        p = min(candidates)
        pivot = equations[p]
        scale = pivot[col]
        for c in pivot:
            pivot[c] /= scale
        used.add(p)
        pivot_row[col] = p
        for i in list(holding[col]):
            if i == p:
                continue
            eq = equations[i]
            factor = eq[col]
            for c, v in pivot.items():
                value = eq.get(c, 0.0) - factor * v
                if abs(value) < 1e-12:
                    if c in eq:
                        del eq[c]
                        holding[c].discard(i)
                else:
                    eq[c] = value
                    holding.setdefault(c, set()).add(i)
    free = {c: k for k, c in enumerate(c for c in range(n) if c not in pivot_row)}  # cell -> its column
    basis = np.zeros((n, len(free)))
    for f, k in free.items():
        basis[f, k] = 1.0
    for col, p in pivot_row.items():
        # A pivot's equation holds itself and free cells only (elimination took the other pivots out).
        for f, v in equations[p].items():
            column = free.get(f)
            if column is not None:
                basis[col, column] = -v
    return basis


def _safe_by_null_space(
    s: _Structure, comp: _Component, threshold: int, safe: set[Quantity], basis: np.ndarray | None = None
) -> set[Quantity]:
    """Hidden cells of a component that a move along its equations proves safe, no LP.

    Any direction d with A·d = 0 (the component's equations: every published cell stays as it is)
    moves the true counts x to x + t·d, a feasible point of the audit's LP for every t that keeps
    x + t·d ≥ 0. For cell i the direction is N·N[i] (N a basis of the null space of A), which moves
    cell i whenever any direction can; t runs down to the first cell that would go below 0, and up
    likewise. Where an end already meets the rule (``_shows_safe``), the LPs would find the cell
    safe too, so they are skipped for it; each end is checked again as a point (equations and
    non-negativity) before it counts. ``tests/unit/test_disclosure_shortcuts.py`` checks it against the exact LPs.
    """
    todo = [i for i, q in enumerate(comp.members) if q not in safe]
    if basis is None:
        basis = _null_space(comp)
    if not basis.shape[1] or not todo:
        return set()
    x = np.array([s.value[q] for q in comp.members], dtype=float)
    # Column j: the move of cell todo[j], scaled so that the cell itself moves by 1 (einsum: no BLAS).
    moves = np.einsum("ik,jk->ij", basis, basis[todo])
    own = moves[todo, np.arange(len(todo))]
    movable = own > 1e-9
    moves = moves[:, movable] / own[movable]
    cells = np.array(todo)[movable]
    true = x[cells]
    down = np.where(moves > 1e-12, x[:, None] / np.where(moves > 1e-12, moves, 1.0), np.inf).min(axis=0)
    up = np.where(moves < -1e-12, x[:, None] / np.where(moves < -1e-12, -moves, 1.0), np.inf).min(axis=0)
    # The equations hold along every move (up to rounding), checked on the sparse form of A.
    residual = np.zeros((len(comp.rhs), moves.shape[1]))
    np.add.at(residual, comp.rows, comp.coef[:, None] * moves[comp.cols])
    exact = np.abs(residual).max(axis=0, initial=0.0) <= 1e-9
    ok = np.zeros(len(cells), dtype=bool)
    for t in (-down, np.minimum(up, threshold + 1.0)):
        y = true + t
        points = x[:, None] + moves * t
        shows = ((y <= _EPS) & (true >= 1)) | ((y >= threshold - _EPS) & (true < threshold))
        shows |= (np.abs(y - true) >= 1 - _EPS) & ((true == 0) | (true >= threshold))
        ok |= shows & exact & np.isfinite(t) & (points.min(axis=0) >= -_EPS)
    return {comp.members[i] for i in cells[ok].tolist()}


def _pinned(basis: np.ndarray, cells: Sequence[int]) -> list[int]:
    """Those of ``cells`` (members of a component) that no move along its equations can change: their
    row of the null space basis is zero, so every point with A·x = b, the LP's feasible set included,
    gives them their true count, and the exact LPs would find min = max = the count ("value determined
    exactly"). Decided here without them (a national month: all 86 cells left after the null-space
    check, in 73 components). A row that rounding leaves a little above 0 goes to the LPs as before;
    a row rounded to 0 that was not would only hide one cell more, never one less.
    ``tests/unit/test_disclosure_shortcuts.py`` holds it against the exact LPs."""
    if not basis.shape[1]:
        return list(cells)
    moving = np.abs(basis[list(cells)]).max(axis=1) > 1e-9
    return [i for i, m in zip(cells, moving.tolist(), strict=True) if not m]


def _exposed(
    s: _Structure, hidden: set[Quantity], threshold: int, certified: set[Quantity] | None = None
) -> _Steps[dict[Quantity, tuple[int, int | None, str]]]:
    """Hidden quantities that break the protection rule, with their LP range and the rule broken.

    Exact per-cell ranges cost two LPs per cell, so cheap certificates come first: any feasible point
    where a cell is 0 (or at least the threshold, or an integer away from its true count if that is
    already large) proves that cell safe. A cell no move along its component's equations can change
    is determined exactly (`_pinned`): exposed, no LP. Four probe LPs per component give such points
    and clear most other cells; only the rest get their own min and max LPs.
    """
    if not hidden:
        return {}
    # What rectangles and moves prove (``certified``, where the caller has worked it out for many
    # feeds at once).
    safe = set(certified) if certified is not None else _certified(s, hidden, threshold, set())
    if hidden <= safe:  # every hidden cell proven safe: no component, null space or LP
        return {}
    comps = []
    out: dict[Quantity, tuple[int, int | None, str]] = {}
    for comp in _components(s, hidden):
        if all(q in safe for q in comp.members):
            continue
        basis = _null_space(comp)
        safe |= _safe_by_null_space(s, comp, threshold, safe, basis)
        left = [i for i, q in enumerate(comp.members) if q not in safe]
        if not left:
            continue
        pinned = _pinned(basis, left)
        for i in pinned:
            q = comp.members[i]
            out[q] = (s.value[q], s.value[q], _breach(s.value[q], s.value[q], threshold) or "")
            safe.add(q)  # decided: no probe or exact LP for it
        if len(pinned) < len(left):
            comps.append(comp)
    if not comps:
        return out
    cap = float(2 * max(s.value.values(), default=0) + 2 * len(s.value) + 10)
    # Probe objectives: push everything down, everything up, small counts down while the rest go up,
    # and the reverse. Random positive weights (fixed seed, so results are reproducible) break the
    # ties that moves along a cycle of cells (+1 −1 +1 −1) leave in a plain sum.
    rng = np.random.default_rng(20151222)
    probes: _Request = []
    for comp in comps:
        n = len(comp.members)
        small = np.array([1.0 if 1 <= s.value[q] < threshold else -1.0 for q in comp.members])
        for sign in (1.0, -1.0, small, -small):
            probes.append((comp, sign * rng.uniform(1.0, 2.0, n), cap))
    points = (yield probes) if probes else []
    pending: list[tuple[_Component, int]] = []
    for k, comp in enumerate(comps):
        found = points[4 * k : 4 * k + 4]
        for i, q in enumerate(comp.members):
            true = s.value[q]
            if q not in safe and not any(_shows_safe(true, y[i], threshold) for y in found):
                pending.append((comp, i))
    if not pending:
        return out
    exact: _Request = []
    for comp, i in pending:
        c = np.zeros(len(comp.members))
        c[i] = 1.0
        exact.append((comp, c, cap))
        exact.append((comp, -c, cap))
    solutions = yield exact
    for k, (comp, i) in enumerate(pending):
        lo = max(0, math.ceil(solutions[2 * k][i] - _EPS))
        hi_val = math.floor(solutions[2 * k + 1][i] + _EPS)
        hi = None if hi_val >= cap else hi_val
        rule = _breach(lo, hi, threshold)
        if rule:
            out[comp.members[i]] = (lo, hi, rule)
    return out
