"""An attacker on published feeds: integer programming over every table of every revision at once.

Written from the published bodies only (it shares no code with ``domain.disclosure``): each cell is
identified by its revision, its population (the body's group) and what it counts (category per
dimension, totals dropped), so a count that appears in several tables of a revision is one unknown;
every row, column and margin line of every table is an equation; with ``monotone`` the attacker also
knows that, for those populations, a later revision only adds people (each count can only grow).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

TOTAL = "計"
Quantity = tuple[int, str, frozenset[tuple[str, str]]]  # (revision index, population, what it counts)


def attack(
    bodies: Sequence[Mapping[str, Any]], *, threshold: int = 3, monotone: Iterable[str] = ()
) -> list[str]:
    """Every hidden cell the attacker pins to one value, or to a small non-zero range: its label and range."""
    monotone = set(monotone)
    value: dict[Quantity, int | None] = {}
    label: dict[Quantity, str] = {}
    eqs: list[tuple[Quantity, list[Quantity]]] = []
    contradictions: list[str] = []
    for n, body in enumerate(bodies):
        for group, tables in (body.get("populations") or body["groups"]).items():
            for t in tables:
                dims = t["dims"]
                cells = {tuple(k): v for k, v, _ in t["cells"]}

                def q_of(
                    key: tuple[str, ...], dims: list[str] = dims, n: int = n, g: str = group
                ) -> Quantity:
                    return (n, g, frozenset((d, c) for d, c in zip(dims, key, strict=True) if c != TOTAL))

                for key, v in cells.items():
                    q = q_of(key)
                    label.setdefault(q, f"r{n + 1} {t['name']}[{', '.join(key)}]")
                    if v is not None:
                        if value.get(q) is None and q in value:
                            # Published here, hidden in another table: the hidden copy is known.
                            contradictions.append(
                                f"{label[q]} published as {v} in {t['name']}, hidden elsewhere"
                            )
                        value[q] = v
                    elif q in value and value[q] is not None:
                        contradictions.append(
                            f"r{n + 1} {t['name']}[{', '.join(key)}] hidden, published elsewhere"
                        )
                    else:
                        value.setdefault(q, None)
                cats = [sorted({k[a] for k in cells if k[a] != TOTAL}) for a in range(len(dims))]
                if len(dims) == 1:
                    eqs.append((q_of((TOTAL,)), [q_of((c,)) for c in cats[0]]))
                else:
                    for r in [*cats[0], TOTAL]:
                        eqs.append((q_of((r, TOTAL)), [q_of((r, c)) for c in cats[1]]))
                    for c in [*cats[1], TOTAL]:
                        eqs.append((q_of((TOTAL, c)), [q_of((r, c)) for r in cats[0]]))
    hidden = [q for q, v in value.items() if v is None]
    if not hidden:
        return contradictions
    col = {q: i for i, q in enumerate(hidden)}
    rows, lower, upper = [], [], []

    def add(terms: list[tuple[Quantity, float]], lo: float, hi: float) -> None:
        row = np.zeros(len(hidden))
        b = 0.0
        for q, sign in terms:
            if q in col:
                row[col[q]] += sign
            else:
                b -= sign * value[q]  # type: ignore[operator]
        if row.any():
            rows.append(row)
            lower.append(lo + b)
            upper.append(hi + b)

    for total, parts in eqs:
        add([(total, 1.0), *((p, -1.0) for p in parts)], 0.0, 0.0)
    for n, group, what in list(value):
        if group in monotone and n > 0 and (n - 1, group, what) in value:
            add([((n, group, what), 1.0), ((n - 1, group, what), -1.0)], 0.0, np.inf)
    cap = 10 * max((v or 0) for v in value.values()) + 100
    breaches = list(contradictions)
    if not rows:
        return breaches
    constraint = LinearConstraint(np.array(rows), lower, upper)
    for q in hidden:
        c = np.zeros(len(hidden))
        c[col[q]] = 1
        lo = milp(c, constraints=constraint, integrality=np.ones(len(hidden)), bounds=Bounds(0, cap))
        hi = milp(-c, constraints=constraint, integrality=np.ones(len(hidden)), bounds=Bounds(0, cap))
        assert lo.status == 0 and hi.status == 0, (lo.message, hi.message)
        low, high = round(lo.fun), round(-hi.fun)
        if low == high or (low >= 1 and high < threshold):
            breaches.append(f"{label[q]}: {low}..{high}")
    return breaches
