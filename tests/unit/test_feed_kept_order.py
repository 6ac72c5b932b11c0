"""A revision's body is kept as the JSON text ``builder.as_kept`` orders (migration 018: ``json`` columns
read back as ``jsonb`` printed them): every object's keys by length in bytes, then by bytes, at every
depth, except inside a table's ``cells`` (keys, values and reasons: no object)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.feed.builder import as_kept

keys = st.sampled_from(["a", "bb", "name", "dims", "cells", "計", "é", "zz", "retention_1m_rate", "by_group"])
scalars = (
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False) | st.text(max_size=3)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(keys, inner, max_size=5).filter(lambda d: "cells" not in d)
    ),
    max_leaves=15,
)
tables = st.fixed_dictionaries(
    {"name": st.text(max_size=4), "dims": st.lists(st.text(max_size=3), min_size=1, max_size=2),
     "cells": st.lists(st.tuples(st.lists(st.text(max_size=2), max_size=2), scalars, scalars), max_size=4)}
)  # fmt: skip


def _jsonb(value: Any) -> Any:
    """The reference: every object's keys in jsonb's order, at every depth."""
    if isinstance(value, dict):
        return {k: _jsonb(value[k]) for k in sorted(value, key=lambda k: (len(k.encode()), k.encode()))}
    if isinstance(value, list | tuple):
        return [_jsonb(v) for v in value]
    return value


def _ordered(value: Any) -> Any:
    """``value`` with each object as its list of (key, value) pairs, so that order is compared too."""
    if isinstance(value, dict):
        return [(k, _ordered(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [_ordered(v) for v in value]
    return value


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(keys, json_values | st.lists(tables, max_size=3), max_size=6).filter(
        lambda d: "cells" not in d
    )
)
def test_a_body_is_kept_with_every_objects_keys_in_jsonbs_order(body: dict[str, Any]) -> None:
    assert _ordered(as_kept(body)) == _ordered(_jsonb(body))
