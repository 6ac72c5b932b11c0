"""The audit's LP-free certificates (domain.disclosure): a hidden cell the rectangle check or the
null-space check calls safe is safe by the exact linear programs too (the moves check:
test_disclosure_moves.py), and a cell the
pinned check calls determined is determined exactly by them, on any layout and any set of hidden cells
(margins included, small counts and zeros everywhere); and suppression gives the same decisions
whichever cells the certificates spared from the solver."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from domain import disclosure as d

CATEGORIES = {"site": ("01", "02", "03", "other"), "sex": ("m", "f"), "age": ("a", "b", "c")}
LAYOUT = [("sex",), ("age",), ("age", "sex"), ("site", "sex"), ("site", "age")]
KEYS = [(s, x, a) for s in CATEGORIES["site"] for x in CATEGORIES["sex"] for a in CATEGORIES["age"]]

counts = st.dictionaries(st.sampled_from(KEYS), st.integers(1, 6), min_size=1, max_size=len(KEYS))


def _exact_range(comp: d._Component, i: int) -> tuple[int, int | None]:
    """min and max of member i over A·x = b, x ≥ 0, by the solver alone."""
    n = len(comp.members)
    a_eq = np.zeros((len(comp.rhs), n))
    for r, c, v in zip(comp.rows, comp.cols, comp.coef, strict=True):
        a_eq[int(r), int(c)] += v
    out = []
    for sign in (1.0, -1.0):
        objective = np.zeros(n)
        objective[i] = sign
        result = linprog(objective, A_eq=a_eq, b_eq=comp.rhs, bounds=[(0, None)] * n, method="highs")
        if result.status == 3:  # unbounded above
            out.append(None)
            continue
        assert result.status == 0, result.message
        out.append(float(result.x[i]))
    lo = max(0, math.ceil(out[0] - 1e-6))  # type: ignore[operator]
    return lo, (None if out[1] is None else math.floor(out[1] + 1e-6))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts, st.integers(2, 5), st.data())
def test_a_cell_the_rectangle_check_calls_safe_is_safe_by_the_exact_lp(
    cells: dict[tuple[str, ...], int], threshold: int, data: st.DataObject
) -> None:
    tables = d.tables_from_counts(cells, CATEGORIES, LAYOUT)
    s = d._structure(tables)
    interior = sorted((q for q in s.value if len(q) == 2), key=lambda q: repr(sorted(q)))
    hidden = set(data.draw(st.lists(st.sampled_from(interior), min_size=4, unique=True)))
    safe = d._safe_by_rectangles(s, hidden, threshold)
    for comp in d._components(s, hidden):
        for i, q in enumerate(comp.members):
            if q in safe:
                lo, hi = _exact_range(comp, i)
                assert d._breach(lo, hi, threshold) is None, (sorted(q), lo, hi)


@st.composite
def hidden_layouts(draw: st.DrawFn) -> tuple[d._Structure, set[frozenset[str]], int]:
    """A structure, the hidden cells suppression would hand the audit (lines closed), a threshold."""
    tables = d.tables_from_counts(draw(counts), CATEGORIES, LAYOUT)
    s = d._structure(tables)
    every = sorted(s.value, key=lambda q: repr(sorted(q)))
    hidden = set(draw(st.lists(st.sampled_from(every), min_size=2, unique=True)))
    d._close_lines(s, hidden)
    return s, hidden, draw(st.integers(2, 5))


def _certified(case: tuple[d._Structure, set[frozenset[str]], int]) -> list[tuple[d._Component, int]]:
    s, hidden, threshold = case
    return [
        (comp, i)
        for comp in d._components(s, hidden)
        for certified in [d._safe_by_null_space(s, comp, threshold, set())]
        for i, q in enumerate(comp.members)
        if q in certified
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden_layouts())
def test_a_cell_the_null_space_check_calls_safe_is_safe_by_the_exact_lp(
    case: tuple[d._Structure, set[frozenset[str]], int],
) -> None:
    threshold = case[2]
    for comp, i in _certified(case):
        lo, hi = _exact_range(comp, i)
        assert d._breach(lo, hi, threshold) is None, (sorted(comp.members[i]), lo, hi)


def test_the_null_space_check_certifies_some_cells() -> None:
    """The property above is not vacuous: a check that certified nothing would pass it."""
    found = find(
        hidden_layouts(),
        lambda case: len(_certified(case)) >= 3,
        settings=settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow]),
    )
    assert len(_certified(found)) >= 3


def _pinned(case: tuple[d._Structure, set[frozenset[str]], int]) -> list[tuple[d._Component, int]]:
    s, hidden, _ = case
    return [
        (comp, i)
        for comp in d._components(s, hidden)
        for i in d._pinned(d._null_space(comp), range(len(comp.members)))
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_cell_the_pinned_check_calls_determined_is_determined_by_the_exact_lp(data: st.DataObject) -> None:
    """Its exact LP range is its count and nothing else, so the audit's exposure (range and rule)
    is what the LPs would give."""
    case = data.draw(st.one_of(hidden_layouts(), hidden_sets()))
    s, _, threshold = case
    for comp, i in _pinned(case):
        q = comp.members[i]
        assert _exact_range(comp, i) == (s.value[q], s.value[q]), sorted(q)
        assert d._breach(s.value[q], s.value[q], threshold) is not None


def test_the_pinned_check_calls_some_cells_determined() -> None:
    """The property above is not vacuous: a check that called no cell determined would pass it."""
    found = find(
        st.one_of(hidden_layouts(), hidden_sets()),
        lambda case: len(_pinned(case)) >= 2,
        settings=settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow]),
    )
    assert len(_pinned(found)) >= 2


# Adversarial counts: mostly 0, 1 and 2 (primary cells, zeros an attacker knows, margins of one person),
# with a few large ones for the moves to lean on.
small_counts = st.dictionaries(
    st.sampled_from(KEYS), st.sampled_from((0, 1, 1, 2, 2, 3, 5, 40)), min_size=1, max_size=len(KEYS)
)


@st.composite
def hidden_sets(draw: st.DrawFn) -> tuple[d._Structure, set[frozenset[str]], int]:
    """A structure and any set of hidden cells (lines closed or not: the check must hold either way),
    with a threshold; counts ordinary or adversarial."""
    tables = d.tables_from_counts(draw(st.one_of(counts, small_counts)), CATEGORIES, LAYOUT)
    s = d._structure(tables)
    every = sorted(s.value, key=lambda q: repr(sorted(q)))
    hidden = set(draw(st.lists(st.sampled_from(every), min_size=2, unique=True)))
    if draw(st.booleans()):
        d._close_lines(s, hidden)
    return s, hidden, draw(st.integers(2, 5))


def _nothing_moves(
    layout: d._Layout, values: np.ndarray, hidden: np.ndarray, safe: np.ndarray, threshold: int
) -> np.ndarray:
    """A moves check that certifies nothing."""
    return np.zeros(hidden.shape, dtype=bool)


def test_a_feed_the_moves_prove_safe_is_audited_without_components_or_solver() -> None:
    """The usual national shape: one placement at another authority's site (a site total of 1 and a
    1 in every site row) beside a busy site. Rectangles cannot move a margin; the moves check takes
    the 1 to 0 and the busy site up by 1 through every table, so the audit builds no component, no
    null space and no LP, and decides as the full audit does."""
    cells = {("01", "m", "a"): 30, ("01", "f", "b"): 25, ("02", "m", "b"): 12, ("02", "f", "a"): 9}
    cells |= {("02", "m", "c"): 7, ("01", "f", "c"): 11, ("other", "f", "a"): 1}
    tables = d.tables_from_counts(cells, CATEGORIES, LAYOUT)
    full = d.suppress(tables, 3)
    assert any(v is None for v in full.published.values())
    components, solve, moves = d._components, d._solve_stacked, d._safe_by_moves_many

    def refused(*_: object) -> None:
        raise AssertionError("the audit went past the moves check")

    d._components = refused  # type: ignore[assignment]
    d._solve_stacked = refused  # type: ignore[assignment]
    try:
        quick = d.suppress(tables, 3)
    finally:
        d._components, d._solve_stacked = components, solve
    d._safe_by_moves_many = _nothing_moves
    try:
        without = d.suppress(tables, 3)
    finally:
        d._safe_by_moves_many = moves
    assert quick.published == full.published == without.published
    assert d.audit(tables, quick.published, 3) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(counts, small_counts), st.integers(2, 5))
def test_suppression_decides_the_same_with_and_without_the_certificate(
    cells: dict[tuple[str, ...], int], threshold: int
) -> None:
    tables = d.tables_from_counts(cells, CATEGORIES, LAYOUT)
    with_certificate = d.suppress(tables, threshold)
    kept = (
        d._safe_by_rectangles,
        d._safe_by_rectangles_many,
        d._safe_by_null_space,
        d._safe_by_moves_many,
        d._pinned,
    )
    d._safe_by_rectangles = lambda s, hidden, threshold: set()  # every cell to the solver
    d._safe_by_rectangles_many = lambda layout, values, hidden, threshold: np.zeros(hidden.shape, dtype=bool)
    d._safe_by_null_space = lambda s, comp, threshold, safe, basis=None: set()
    d._safe_by_moves_many = _nothing_moves
    d._pinned = lambda basis, cells: []
    try:
        without = d.suppress(tables, threshold)
    finally:
        (
            d._safe_by_rectangles,
            d._safe_by_rectangles_many,
            d._safe_by_null_space,
            d._safe_by_moves_many,
            d._pinned,
        ) = kept
    assert with_certificate.published == without.published
    assert d.audit(tables, with_certificate.published, threshold) == []


def _components_by_definition(s: d._Structure, hidden: set[frozenset[str]]) -> list[d._Component]:
    """The hidden quantities linked through lines (union-find over each line's hidden members), members
    in the tie-break order, groups in the order of their first member; per group its lines in the
    layout's order, each line's hidden members (total first: +1, parts: -1) and what its published
    members add up to, moved across."""
    parent = {q: q for q in hidden}

    def find(q: frozenset[str]) -> frozenset[str]:
        while parent[q] != q:
            q = parent[q]
        return q

    active = []
    for line in s.lines:
        members = [q for q in line.members if q in hidden]
        if members:
            active.append((line, members[0]))
            for q in members[1:]:
                a, b = find(members[0]), find(q)
                if a != b:
                    parent[b] = a
    groups: dict[frozenset[str], list[frozenset[str]]] = {}
    for q in sorted(hidden, key=s.layout.order.__getitem__):
        groups.setdefault(find(q), []).append(q)
    out = []
    for root, members in groups.items():
        index = {q: i for i, q in enumerate(members)}
        rows, cols, coef, rhs = [], [], [], []
        for j, line in enumerate(line for line, q0 in active if find(q0) == root):
            b = 0.0
            for q, sign in ((line.total, 1.0), *((p, -1.0) for p in line.parts)):
                if q in index:
                    rows.append(j)
                    cols.append(index[q])
                    coef.append(sign)
                else:
                    b -= sign * s.value[q]
            rhs.append(b)
        out.append(d._Component(members, np.array(rows), np.array(cols), np.array(coef), np.array(rhs)))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden_sets())
def test_components_are_the_hidden_cells_linked_through_lines_with_their_equations(
    case: tuple[d._Structure, set[frozenset[str]], int],
) -> None:
    """`_components` (label propagation over the layout's line arrays) gives the groups, members,
    equations and right-hand sides of the definition, in the same order and of the same types, so
    that the null space and the LPs built on them are the same."""
    s, hidden, _ = case
    got, expected = d._components(s, hidden), _components_by_definition(s, hidden)
    assert [c.members for c in got] == [c.members for c in expected]
    for a, b in zip(got, expected, strict=True):
        for name in ("rows", "cols", "coef", "rhs"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.tolist() == y.tolist(), name


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden_sets())
def test_the_null_space_basis_spans_the_moves_of_a_component(
    case: tuple[d._Structure, set[frozenset[str]], int],
) -> None:
    """`_null_space` gives a basis of the null space of a component's equations: n - rank columns,
    independent, each moving no line (A·N = 0), with 1 at its own free cell."""
    s, hidden, _ = case
    for comp in d._components(s, hidden):
        n = len(comp.members)
        a = np.zeros((len(comp.rhs), n))
        np.add.at(a, (comp.rows, comp.cols), comp.coef)
        basis = d._null_space(comp)
        assert basis.shape == (n, n - np.linalg.matrix_rank(a))
        assert np.abs(a @ basis).max(initial=0.0) <= 1e-9
        assert not basis.shape[1] or np.linalg.matrix_rank(basis) == basis.shape[1]
        assert all(1.0 in basis[:, k].tolist() for k in range(basis.shape[1]))
