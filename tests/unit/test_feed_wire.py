"""The feed's publishing path (msgspec structs) is the ``FeedRevision`` contract: the same fields in the
same order, the same bytes out for every body the builder composes, and every body the model refuses
is refused (it may refuse more: it is stricter on patterns, never looser)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any, get_args, get_origin

import msgspec
import pydantic
import pytest

from contracts import feed as contract
from domain.feed import Job, compose_many
from tests.unit import feed_golden_data as g

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


@pytest.mark.parametrize("sort_keys", [False, True])  # as composed, and reordered as jsonb keeps it
def test_published_bytes_are_the_models_bytes(sort_keys: bool) -> None:
    for body in _bodies():
        text = json.dumps(body, ensure_ascii=False, sort_keys=sort_keys)
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
    rng = random.Random(14)
    bodies = _bodies(6)
    refused = 0
    for _ in range(600):
        body = rng.choice(bodies)
        path = rng.choice(_leaves(body)[:-1])  # not the body itself
        text = json.dumps(_set(body, path, rng.choice(_VALUES)), ensure_ascii=False)
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
