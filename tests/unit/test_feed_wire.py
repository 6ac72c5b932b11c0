"""The feed's publishing path (msgspec structs) is the ``FeedRevision`` contract: the same fields in the
same order, the same bytes out for every body the builder composes and keeps, and every body the model
refuses is refused (it may refuse more: it is stricter on patterns, never looser), except inside a
table's cells: they are published as kept, and their check is where they are written (every kept
body's cells are the model's, whatever the counts, threshold, layout and revision)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, get_args, get_origin

import msgspec
import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.feed import builder
from contracts import feed as contract
from domain.feed import FeedCounts, Job, compose_many
from tests.unit import feed_golden_data as g
from tests.unit.feed_strategies import months

HORIZON = datetime(2025, 11, 5, 15, 0, 0, 123456, tzinfo=UTC)
BUILT = datetime(2025, 11, 6, tzinfo=UTC)


_CHANGES: list[dict[str, Any]] = [
    {"figure": "indicator: placement_rate", "change": "changed", "before": 0.25, "after": 0.3333},
    {"figure": "referral_placements: sex[male]", "change": "suppressed"},
    {"figure": "target x FY2025: achievement", "change": "added", "after": "all_met"},
]


def _bodies(n: int = 12) -> list[dict[str, Any]]:
    feeds = g.month_counts(n, 7)
    sites = dict(g.authorities(n))
    jobs = [Job(f, None, g.targets(a, sites[a])) for a, f in sorted(feeds.items())]
    out: list[dict[str, Any]] = []
    for i, c in enumerate(compose_many(jobs, threshold=3)):
        changes = _CHANGES[: i % 4]
        body = dict(c.body, revision=1 + i % 3, horizon=HORIZON.isoformat(), changes=changes)
        out.append(json.loads(json.dumps(body)))  # as kept: JSON arrays, not tuples
    return out


def _model_bytes(text: str) -> bytes:
    return contract.FeedRevision.model_validate_json(text).model_dump_json(exclude_none=False).encode()


def test_the_structs_have_the_models_fields_in_order() -> None:
    pairs: list[tuple[type[pydantic.BaseModel], Any]] = [(contract.FeedRevision, contract._FeedRevision)]
    seen = set()
    while pairs:
        model, struct = pairs.pop()
        if model in seen:
            continue
        seen.add(model)
        assert list(model.model_fields) == list(struct.__struct_fields__), model.__name__
        hints = {f.name: f.type for f in msgspec.inspect.type_info(struct).fields}  # type: ignore[attr-defined]
        for name, info in model.model_fields.items():
            assert hints[name] is not None
            for arg in (info.annotation, *get_args(info.annotation)):
                for inner in (arg, *get_args(arg)):
                    if isinstance(inner, type) and issubclass(inner, pydantic.BaseModel):
                        twin = getattr(contract, "_" + inner.__name__)
                        pairs.append((inner, twin))
            assert get_origin(info.annotation) is not tuple
    assert len(seen) == 8


@pytest.mark.parametrize("kept", [False, True])  # as composed, and reordered as jsonb keeps it
def test_published_bytes_are_the_models_bytes(kept: bool) -> None:
    for body in _bodies():
        text = orjson.dumps(builder.as_kept(body) if kept else body)  # as the builder writes it
        key, headers, value = contract.encode_feed_revision(text, BUILT)
        assert value == _model_bytes(text)
        assert key == f"{body['authority']}:{body['month']}".encode()
        assert dict(headers)["ce_time"] == BUILT.isoformat().encode()


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))] + [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))] + [path]
    return [path]


def _set(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    body = json.loads(json.dumps(body))
    if not path:
        return value
    at = body
    for step in path[:-1]:
        at = at[step]
    if value is _DROP:
        if isinstance(at, dict):
            del at[path[-1]]
        else:
            at.pop(path[-1])
    else:
        at[path[-1]] = value
    return body


_DROP = object()
_VALUES = [-1, 0, 7, 1.5, -0.5, "x", "１２３４５６", "123456\n", "2025-13", None, True, [], {}, ["a"], _DROP]


def test_what_the_model_refuses_the_structs_refuse() -> None:
    """Anywhere but inside a table's cells (published as kept: see the tests below)."""
    rng = random.Random(14)
    bodies = _bodies(6)
    refused = 0
    for _ in range(600):
        body = rng.choice(bodies)
        path = rng.choice([p for p in _leaves(body)[:-1] if "cells" not in p])  # not the body itself
        text = orjson.dumps(_set(body, path, rng.choice(_VALUES)))  # as the builder writes a body
        try:
            expected = _model_bytes(text)
        except pydantic.ValidationError:
            refused += 1
            with pytest.raises(contract.Invalid):
                contract.encode_feed_revision(text, BUILT)
            continue
        try:
            _, _, value = contract.encode_feed_revision(text, BUILT)
        except contract.Invalid:
            continue  # stricter than the model: allowed
        assert value == expected, path
    assert refused > 100


@pytest.mark.parametrize("cells", ["{}", '"x"', "1", "null"])
def test_a_tables_cells_that_are_not_an_array_are_refused(cells: str) -> None:
    body = _bodies(1)[0]
    text = orjson.dumps(body).replace(b'"cells":[', b'"cells":' + cells.encode() + b',"was":[', 1)
    with pytest.raises(contract.Invalid, match="not an array"):
        contract.encode_feed_revision(text, BUILT)


# --- every kept body's cells are the contract's -------------------------------------------------------
# The publisher copies a table's cells as kept (``contracts.feed._FeedTable``): these tests are their
# check, moved from publishing to where they are written (``builder._kept``, the only writer of kept
# bodies). Counts: small (hidden), zero, large; thresholds 1-5; one to three own sites and another
# authority's (every layout); revision 1, and revision 2 over revision 1's kept body with more counted.


def _published_as_the_model_writes_it(kept: bytes) -> None:
    model = contract.FeedRevision.model_validate_json(kept)  # the contract's check: it holds
    _, _, value = contract.encode_feed_revision(kept, BUILT)
    assert value == model.model_dump_json().encode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(months(), st.integers(1, 5))
def test_fuzz_every_kept_bodys_cells_are_the_contracts_and_published_as_kept(
    months: tuple[FeedCounts, FeedCounts], threshold: int
) -> None:
    first, late = months
    horizon = HORIZON.isoformat()
    targets = g.targets(first.authority, first.sites)  # the authority's and its first site's
    [one] = builder._kept(
        [builder._Work(Job(first, None, targets), None, 1)], threshold=threshold, horizon=horizon
    )
    _published_as_the_model_writes_it(one.body)
    work = builder._Work(
        Job(replace(g.plus(first, late), sites=late.sites), None, targets), one.body.decode(), 2
    )
    [two] = builder._kept([work], threshold=threshold, horizon=horizon)
    _published_as_the_model_writes_it(two.body)


def test_kept_bodies_of_a_national_like_month_are_published_as_the_model_writes_them() -> None:
    """The golden month in miniature (suppression, audits, targets, a second revision): every kept
    body, hidden cells among them."""
    feeds = g.month_counts(40, 7)
    sites = dict(g.authorities(40))
    horizon = HORIZON.isoformat()
    work = [builder._Work(Job(f, None, g.targets(a, sites[a])), None, 1) for a, f in sorted(feeds.items())]
    ones = builder._kept(work, threshold=3, horizon=horizon)
    late = g.month_counts(40, 8, scale=0.1)
    work2 = [
        builder._Work(Job(g.plus(f, late[a]), None, g.targets(a, sites[a])), k.body.decode(), 2)
        for (a, f), k in zip(sorted(feeds.items()), ones, strict=True)
    ]
    kept = ones + builder._kept(work2, threshold=3, horizon=horizon)
    assert sum(b'"primary"' in k.body for k in kept) > 10  # hidden cells published as kept
    for k in kept:
        _published_as_the_model_writes_it(k.body)
