"""Disclosure control of the monthly placement feed, checked by an attacker written independently of
the module's own audit: it rebuilds the additive relations from the tables, solves lines with one
unknown, and bounds every suppressed cell with integer programming (stronger than the LP relaxation
the module audits with)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from domain.disclosure import (
    TOTAL,
    CellRef,
    DisclosureError,
    SuppressionReason,
    Table,
    audit,
    build_feed_tables,
    counts,
    suppress,
    suppress_many,
    tables_from_counts,
)

SEXES = ["男", "女"]
AGE_BANDS = ["19以下", *(f"{a}-{a + 4}" for a in range(20, 65, 5)), "65以上"]
TYPICAL_CATEGORIES = {
    "occupation": [f"{i:02d}" for i in range(1, 16)],
    "sex": SEXES,
    "age_band": AGE_BANDS,
    "attribute": [
        "生活保護",
        "児童扶養手当",
        "住居確保給付金",
        "生活困窮者",
        "障害者",
        "若者",
        "高齢者",
        "その他",
    ],
    "route": ["紹介就職", "自己就職", "常用", "臨時", "パート"],
}
TYPICAL_LAYOUT: list[tuple[str, ...]] = [
    ("attribute",),
    ("route",),
    ("occupation", "sex"),
    ("age_band", "sex"),
    ("attribute", "sex"),
    ("attribute", "route"),
]


def _records(rng: random.Random, categories: Mapping[str, Sequence[str]], n: int) -> list[dict[str, str]]:
    # Skewed category weights make some categories common and others rare, as in real feeds.
    weights = {d: [rng.random() ** 2 + 0.01 for _ in cats] for d, cats in categories.items()}
    return [{d: rng.choices(list(cats), weights[d])[0] for d, cats in categories.items()} for _ in range(n)]


# ---------------------------------------------------------------------------------------------------
# The attacker


def _what(table: Table, key: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    return frozenset((d, c) for d, c in zip(table.dims, key, strict=True) if c != TOTAL)


def _equations(tables: Sequence[Table]) -> list[tuple[frozenset, list[frozenset]]]:
    eqs = []
    for t in tables:
        axes: list[list[str]] = [[] for _ in t.dims]
        for key in t.cells:
            for i, c in enumerate(key):
                if c not in axes[i]:
                    axes[i].append(c)
        if len(t.dims) == 1:
            eqs.append((_what(t, (TOTAL,)), [_what(t, (c,)) for c in axes[0]]))
            continue
        rows, cols = axes
        for r in rows:
            eqs.append((_what(t, (r, TOTAL)), [_what(t, (r, c)) for c in cols]))
        for c in cols:
            eqs.append((_what(t, (TOTAL, c)), [_what(t, (r, c)) for r in rows]))
        eqs.append((_what(t, (TOTAL, TOTAL)), [_what(t, (r, TOTAL)) for r in rows]))
        eqs.append((_what(t, (TOTAL, TOTAL)), [_what(t, (TOTAL, c)) for c in cols]))
    return eqs


def attack(
    tables: Sequence[Table], published: Mapping[CellRef, int | None]
) -> dict[frozenset, tuple[int, float]]:
    """Integer bounds on every suppressed quantity given what was published."""
    known: dict[frozenset, int] = {}
    unknown: set[frozenset] = set()
    for t in tables:
        keys = list(t.cells)
        rows = {k[0] for k in keys}
        all_keys = [*keys, (TOTAL,)] if len(t.dims) == 1 else []
        if len(t.dims) == 2:
            cols = {k[1] for k in keys}
            all_keys = keys + [(r, TOTAL) for r in rows] + [(TOTAL, c) for c in cols] + [(TOTAL, TOTAL)]
        for key in all_keys:
            v = published[CellRef(t.name, key)]
            if v is None:
                unknown.add(_what(t, key))
            else:
                known[_what(t, key)] = v
    unknown -= set(known)
    eqs = _equations(tables)
    # Lines with one unknown determine it; repeat until nothing changes.
    changed = True
    solved: dict[frozenset, int] = {}
    while changed:
        changed = False
        for total, parts in eqs:
            members = [total, *parts]
            missing = [q for q in members if q in unknown and q not in solved]
            if len(missing) == 1:
                value = {**known, **solved}
                rest = sum(value[p] for p in parts if p not in missing)
                q = missing[0]
                solved[q] = rest if q == total else value[total] - rest
                changed = True
    bounds: dict[frozenset, tuple[int, float]] = {q: (v, v) for q, v in solved.items()}
    free = sorted(unknown - set(solved), key=repr)
    if not free:
        return bounds
    index = {q: i for i, q in enumerate(free)}
    value = {**known, **solved}
    a_rows, b = [], []
    for total, parts in eqs:
        row = np.zeros(len(free))
        rhs = 0.0
        for q, sign in ((total, 1.0), *((p, -1.0) for p in parts)):
            if q in index:
                row[index[q]] += sign
            else:
                rhs -= sign * value[q]
        if row.any():
            a_rows.append(row)
            b.append(rhs)
    cons = LinearConstraint(np.array(a_rows), b, b)
    integrality = np.ones(len(free))
    for q, i in index.items():
        c = np.zeros(len(free))
        c[i] = 1.0
        lo = milp(c, constraints=cons, integrality=integrality, bounds=Bounds(0, np.inf))
        hi = milp(-c, constraints=cons, integrality=integrality, bounds=Bounds(0, np.inf))
        assert lo.status == 0
        bounds[q] = (round(lo.fun), math.inf if hi.status != 0 else round(-hi.fun))
    return bounds


def assert_protected(
    tables: Sequence[Table], published: Mapping[CellRef, int | None], threshold: int
) -> None:
    for q, (lo, hi) in attack(tables, published).items():
        assert lo != hi, f"suppressed {sorted(q)} is pinned at {lo}"
        assert not (lo >= 1 and hi <= threshold - 1), f"suppressed {sorted(q)} is in {lo}..{hi}"


# ---------------------------------------------------------------------------------------------------
# Tests

SMALL_CATEGORIES = {"a": ["a1", "a2", "a3", "a4"], "b": ["b1", "b2", "b3"], "c": ["c1", "c2", "c3"]}
SMALL_LAYOUTS: list[list[tuple[str, ...]]] = [
    [("a", "b")],
    [("a",), ("b",), ("a", "b")],
    [("a", "b"), ("a", "c")],
    # A cycle of two-way tables: the case where the LP relaxation and integer reasoning may differ.
    [("a", "b"), ("b", "c"), ("a", "c")],
]


@pytest.mark.parametrize("seed", range(24))
def test_attacker_cannot_recover_small_feeds(seed: int) -> None:
    rng = random.Random(seed)
    layout = SMALL_LAYOUTS[seed % len(SMALL_LAYOUTS)]
    n = rng.choice([1, 2, 3, 4, 6, 9, 15, 30])
    threshold = rng.choice([2, 3, 3, 5])
    tables = build_feed_tables(_records(rng, SMALL_CATEGORIES, n), SMALL_CATEGORIES, layout)
    feed = suppress(tables, threshold)
    assert audit(tables, feed.published, threshold) == []
    assert_protected(tables, feed.published, threshold)


@pytest.mark.parametrize("seed", range(4))
def test_attacker_cannot_recover_typical_feeds(seed: int) -> None:
    rng = random.Random(1000 + seed)
    n = [4, 12, 25, 60][seed]
    tables = build_feed_tables(_records(rng, TYPICAL_CATEGORIES, n), TYPICAL_CATEGORIES, TYPICAL_LAYOUT)
    feed = suppress(tables)
    assert feed.suppressed
    assert_protected(tables, feed.published, 3)


def _two_by_two(cells: dict[tuple[str, ...], int]) -> Table:
    return Table("occupation × sex", ("occupation", "sex"), cells)


def test_primary_suppression_hides_small_counts_and_keeps_zeros() -> None:
    table = _two_by_two({("09", "男"): 1, ("09", "女"): 5, ("06", "男"): 7, ("06", "女"): 0})
    feed = suppress([table])
    cell = feed.cells[CellRef(table.name, ("09", "男"))]
    assert cell.value is None
    assert cell.reason is SuppressionReason.PRIMARY
    assert feed.value(CellRef(table.name, ("06", "女"))) == 0
    # The row and column of the hidden 1 each need a second hidden cell.
    assert feed.value(CellRef(table.name, ("09", "女"))) is None
    assert feed.cells[CellRef(table.name, ("09", "女"))].reason is SuppressionReason.COMPLEMENTARY
    assert_protected([table], feed.published, 3)


def test_totals_and_margins_are_primary_cells_too() -> None:
    tables = build_feed_tables(
        [{"sex": "男", "route": "紹介就職"}] * 2,
        {"sex": SEXES, "route": ["紹介就職", "自己就職"]},
        [("sex",), ("route", "sex")],
    )
    feed = suppress(tables)
    assert feed.value(CellRef("sex", (TOTAL,))) is None
    assert feed.value(CellRef("route × sex", (TOTAL, TOTAL))) is None
    assert feed.value(CellRef("sex", ("女",))) == 0
    assert_protected(tables, feed.published, 3)


def test_nothing_suppressed_when_every_count_is_large_or_zero() -> None:
    table = _two_by_two({("09", "男"): 4, ("09", "女"): 5, ("06", "男"): 7, ("06", "女"): 0})
    feed = suppress([table])
    assert not feed.suppressed
    assert audit([table], feed.published) == []


def test_published_values_are_true_and_totals_add_up() -> None:
    rng = random.Random(7)
    tables = build_feed_tables(_records(rng, TYPICAL_CATEGORIES, 40), TYPICAL_CATEGORIES, TYPICAL_LAYOUT)
    feed = suppress(tables)
    by_name = {t.name: t for t in tables}
    for table in tables:
        for key, count in table.cells.items():
            assert feed.value(CellRef(table.name, key)) in (count, None)
    values: dict[frozenset[tuple[str, str]], int | None] = {}
    for ref, published in feed.published.items():
        values.setdefault(_what(by_name[ref.table], ref.key), published)
    checked = 0
    for total, parts in _equations(tables):
        if values[total] is not None and all(values[p] is not None for p in parts):
            assert values[total] == sum(values[p] or 0 for p in parts)
            checked += 1
    assert checked
    # A one-way table and the matching margin of a two-way table publish the same numbers.
    for c in TYPICAL_CATEGORIES["attribute"]:
        assert feed.value(CellRef("attribute", (c,))) == feed.value(CellRef("attribute × sex", (c, TOTAL)))


def test_revision_keeps_earlier_suppressions() -> None:
    rng = random.Random(11)
    records = _records(rng, TYPICAL_CATEGORIES, 30)
    first = suppress(build_feed_tables(records, TYPICAL_CATEGORIES, TYPICAL_LAYOUT))
    late = _records(rng, TYPICAL_CATEGORIES, 4)
    tables = build_feed_tables(records + late, TYPICAL_CATEGORIES, TYPICAL_LAYOUT)
    fresh = suppress(tables)
    revised = suppress(tables, previously_suppressed=first.suppressed)
    assert first.suppressed <= revised.suppressed
    assert first.suppressed - fresh.suppressed, "the late records should unsuppress something"
    carried = first.suppressed - fresh.suppressed
    assert any(revised.cells[r].reason is SuppressionReason.PREVIOUS_REVISION for r in carried)
    assert_protected(tables, revised.published, 3)


def test_revision_with_changed_layout_is_refused() -> None:
    table = _two_by_two({("09", "男"): 1, ("09", "女"): 5, ("06", "男"): 7, ("06", "女"): 0})
    with pytest.raises(DisclosureError, match="layout changed"):
        suppress([table], previously_suppressed=frozenset({CellRef(table.name, ("01", "男"))}))


def test_inconsistent_tables_are_refused() -> None:
    cross = _two_by_two({("09", "男"): 4, ("09", "女"): 5, ("06", "男"): 7, ("06", "女"): 0})
    sexes = Table("sex", ("sex",), {("男",): 12, ("女",): 5})
    with pytest.raises(DisclosureError, match="same placements"):
        suppress([cross, sexes])


def test_incomplete_table_is_refused() -> None:
    with pytest.raises(DisclosureError, match="every category combination"):
        suppress([_two_by_two({("09", "男"): 4, ("09", "女"): 5, ("06", "男"): 7})])


def test_unknown_category_in_record_is_refused() -> None:
    with pytest.raises(DisclosureError, match="record 0 has sex='X'"):
        build_feed_tables([{"sex": "X"}], {"sex": SEXES}, [("sex",)])


def test_audit_reports_a_pinned_cell() -> None:
    table = _two_by_two({("09", "男"): 1, ("09", "女"): 5, ("06", "男"): 7, ("06", "女"): 0})
    published = dict(suppress([table], threshold=1).published)  # threshold 1 hides nothing
    published[CellRef(table.name, ("09", "男"))] = None
    exposures = audit([table], published)
    assert [e.ref for e in exposures] == [CellRef(table.name, ("09", "男"))]
    assert exposures[0].lower == exposures[0].upper == 1


def test_audit_reports_a_small_but_not_zero_range() -> None:
    # Hiding a whole row while the column totals stay published pins each cell through its column.
    table = _two_by_two({("09", "男"): 1, ("09", "女"): 2, ("06", "男"): 7, ("06", "女"): 4})
    published = dict(suppress([table], threshold=1).published)
    for key in [("09", "男"), ("09", "女"), ("09", TOTAL)]:
        published[CellRef(table.name, key)] = None
    flagged = {e.ref.key for e in audit([table], published)}
    assert flagged == {("09", "男"), ("09", "女"), ("09", TOTAL)}


def test_audit_reports_a_range_of_only_small_non_zero_counts() -> None:
    # Interior hidden, margins published (rows 3 and 2, columns 4 and 1): 09/男 must be 2 or 3 and
    # 06/男 1 or 2, so with threshold 5 both are known to be small but not zero.
    table = _two_by_two({("09", "男"): 2, ("09", "女"): 1, ("06", "男"): 2, ("06", "女"): 0})
    published = dict(suppress([table], threshold=1).published)
    for key in table.cells:
        published[CellRef(table.name, key)] = None
    exposures = {e.ref.key: (e.lower, e.upper) for e in audit([table], published, threshold=5)}
    assert exposures == {("09", "男"): (2, 3), ("06", "男"): (1, 2)}


def test_feeds_suppressed_together_get_what_each_gets_alone() -> None:
    # suppress_many stacks the audits' LPs of many feeds into shared solver calls; the decisions must
    # be those of suppress on each feed, and each feed must still resist the attacker.
    rng = random.Random(42)
    feeds = []
    for n in range(40):
        layout = SMALL_LAYOUTS[n % len(SMALL_LAYOUTS)] if n % 3 else TYPICAL_LAYOUT
        cats = SMALL_CATEGORIES if n % 3 else TYPICAL_CATEGORIES
        tables = build_feed_tables(_records(rng, cats, rng.choice([0, 2, 5, 12, 30])), cats, layout)
        feeds.append((tables, frozenset[CellRef]()))
    together = suppress_many(feeds, 3)
    for (tables, _), feed in zip(feeds, together, strict=True):
        assert feed.cells == suppress(tables, 3).cells
        assert_protected(tables, feed.published, 3)


def test_tables_from_counted_combinations_equal_tables_from_records() -> None:
    rng = random.Random(3)
    records = _records(rng, TYPICAL_CATEGORIES, 50)
    dims = list(TYPICAL_CATEGORIES)
    combinations: dict[tuple[str, ...], int] = {}
    for r in records:
        key = tuple(r[d] for d in dims)
        combinations[key] = combinations.get(key, 0) + 1
    tables = build_feed_tables(records, TYPICAL_CATEGORIES, TYPICAL_LAYOUT)
    assert tables == tables_from_counts(combinations, TYPICAL_CATEGORIES, TYPICAL_LAYOUT)
    # counts: every published cell's true value, margins included, the same ones suppress publishes.
    values = counts(tables)
    assert set(values) == set(suppress(tables).cells)
    assert values[CellRef("attribute × sex", (TOTAL, TOTAL))] == 50
    with pytest.raises(DisclosureError, match="sex='X'"):
        tables_from_counts({("01", "X"): 1}, {"occupation": ["01"], "sex": SEXES}, [("sex",)])
