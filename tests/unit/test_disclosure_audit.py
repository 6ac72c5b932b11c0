"""The audit's protection rule at its boundary (domain.disclosure): a hidden cell is exposed when its
feasible range is a single value, or lies wholly within 1 to threshold−1."""

from __future__ import annotations

import pytest

from domain.disclosure import TOTAL, CellRef, Table, audit, suppress

# Interior hidden, margins published (rows 3 and 2, columns 4 and 1): an attacker finds 09/男 in 2..3,
# 06/男 in 1..2, and 09/女, 06/女 in 0..1.
TABLE = Table(
    "occupation × sex",
    ("occupation", "sex"),
    {("09", "男"): 2, ("09", "女"): 1, ("06", "男"): 2, ("06", "女"): 0},
)


def _interior_hidden() -> dict[CellRef, int | None]:
    published = dict(suppress([TABLE], threshold=1).published)  # threshold 1 hides nothing
    for key in TABLE.cells:
        published[CellRef(TABLE.name, key)] = None
    return published


@pytest.mark.parametrize(
    ("threshold", "exposed"),
    [
        # 2..3 and 1..2 are both wholly below 4: the upper end 3 is exactly threshold − 1.
        (4, {("09", "男"): (2, 3), ("06", "男"): (1, 2)}),
        # At 3 the range 2..3 holds a value of at least the threshold; 1..2 reaches only threshold − 1.
        (3, {("06", "男"): (1, 2)}),
        # At 2 both ranges hold a value of at least the threshold.
        (2, {}),
    ],
)
def test_a_range_is_exposed_when_its_upper_end_is_below_the_threshold(
    threshold: int, exposed: dict[tuple[str, ...], tuple[int, int]]
) -> None:
    found = audit([TABLE], _interior_hidden(), threshold)
    assert {e.ref.key: (e.lower, e.upper) for e in found} == exposed
    for e in found:
        assert e.rule == f"known to be between {e.lower} and {e.upper}, a small non-zero count"


def test_a_range_of_one_value_is_exposed_whatever_the_value() -> None:
    # Hiding a single cell of 7 while its row and column totals stay published pins it exactly.
    table = Table("occupation × sex", ("occupation", "sex"), {("09", "男"): 7, ("09", "女"): 5})
    published = dict(suppress([table], threshold=1).published)
    published[CellRef(table.name, ("09", "男"))] = None
    [exposure] = audit([table], published)
    assert (exposure.ref.key, exposure.lower, exposure.upper) == (("09", "男"), 7, 7)
    assert exposure.rule == "value determined exactly: 7"
    assert TOTAL not in exposure.ref.key
