"""An arriving personal block is judged by its family's contract (``infra.crypto.Opener.checked``): the
contract's msgspec struct first (``contracts.wire``), the pydantic contract where the struct refuses. The
shared view dead-letters an event whose block the contract refuses, so the quick path must give exactly
the contract's verdict and reason: held equal here over the simulator's blocks, ``hypothesis`` mutations
of them (the wire decoder's near misses, wrong types, dropped and extra fields) and plaintexts that are
not JSON objects at all.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.envelope import PERSONAL_MODELS, Family
from devtools.simulator import SimulationConfig, simulate
from infra.codecs.field_errors import from_validation_error
from infra.crypto import Opener, UnfitBlock, seal_plaintexts
from tests import factories
from tests.unit.test_wire import _NEAR_MISS, _VALUE, _paths, _tweaks

PERSON = factories.person_key()
KEY = os.urandom(32)


def _sealed(plain: bytes) -> dict[str, Any]:
    ((kid, nonce, ct),) = seal_plaintexts([(KEY, PERSON, plain)])
    return {"alg": "A256GCM", "kid": kid, "nonce": nonce, "ct": ct}


def _contract_verdict(family: Family, plain: bytes) -> tuple[str, Any]:
    """What the pydantic contract alone says of this plaintext (the check before the quick path)."""
    try:
        PERSONAL_MODELS[family].model_validate_json(plain)
    except ValidationError as exc:
        rules = sorted({e.operator_rule for e in from_validation_error(exc, prefix=("personal",))})
        return "unfit", "; ".join(rules[:5])
    return "opened", orjson.loads(plain)


def _checked_verdict(family: Family, plain: bytes) -> tuple[str, Any]:
    try:
        return "opened", Opener({PERSON: KEY}).checked(PERSON, family.value, _sealed(plain))
    except UnfitBlock as unfit:
        return "unfit", unfit.reason


def _blocks() -> dict[Family, list[dict[str, Any]]]:
    out: dict[Family, list[dict[str, Any]]] = {}
    for s in simulate(SimulationConfig(authorities=2, months=2, seed=7, registrations_per_site_month=6)):
        family = Family(s.family)
        if family in PERSONAL_MODELS and s.data.get("personal") is not None:
            out.setdefault(family, []).append(s.data["personal"])
    return out


BLOCKS = _blocks()


def test_the_simulators_blocks_open_alike() -> None:
    assert set(BLOCKS) == set(PERSONAL_MODELS)
    for family, blocks in BLOCKS.items():
        for block in blocks:
            plain = orjson.dumps(block)
            assert _checked_verdict(family, plain) == _contract_verdict(family, plain) == ("opened", block)


@pytest.mark.parametrize(
    "plain",
    [b"", b"null", b"[]", b"{}", b'"name"', b"not json", b'{"name": "a"', b'{"name": "a"}}', b"\xff\xfe"],
)
@pytest.mark.parametrize("family", sorted(PERSONAL_MODELS))
def test_plaintexts_that_are_no_block_are_refused_alike(family: Family, plain: bytes) -> None:
    verdict = _checked_verdict(family, plain)
    assert verdict[0] == "unfit"
    assert verdict == _contract_verdict(family, plain)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[Family, dict[str, Any]]:
    family = draw(st.sampled_from(sorted(BLOCKS)))
    data = dict(draw(st.sampled_from(BLOCKS[family])))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["tweak", "tweak", "near", "replace", "drop", "none"]))
        old = parent[path[-1]]
        if action == "tweak" and isinstance(old, str) and old:
            parent[path[-1]] = draw(_tweaks(old))
        elif action == "near":
            parent[path[-1]] = draw(_NEAR_MISS)
        elif action == "replace":
            parent[path[-1]] = draw(_VALUE)
        elif action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "none":
            parent[path[-1]] = None
    if draw(st.booleans()):
        data[draw(st.text(min_size=1, max_size=8))] = draw(_VALUE)
    return family, data


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_fuzz_a_mutated_block_is_judged_as_the_contract_judges_it(
    case: tuple[Family, dict[str, Any]],
) -> None:
    family, data = case
    plain = orjson.dumps(data)
    assert _checked_verdict(family, plain) == _contract_verdict(family, plain)


def test_the_mutations_reach_both_verdicts() -> None:
    """Not vacuous: the mutations give refused blocks and accepted ones."""
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(_mutated())
    def collect(case: tuple[Family, dict[str, Any]]) -> None:
        seen.add(_contract_verdict(case[0], orjson.dumps(case[1]))[0])

    collect()
    assert seen == {"opened", "unfit"}


def _with_x(raw: bytes) -> bytes:
    """A registration's block with ``raw`` (JSON text) in a field its contract does not read."""
    return orjson.dumps({"name": "A", "birth_date": "1988-06-01"})[:-1] + b',"x":' + raw + b"}"


@pytest.mark.parametrize("depth", [600, 1500])
def test_a_block_nested_past_the_contracts_limit_is_unfit(depth: int) -> None:
    """Opened at 600 levels (which the contract refuses) and ``RecursionError`` at 1,500 (Review 7)."""
    plain = _with_x(b"[" * depth + b"]" * depth)
    assert _checked_verdict(Family.REGISTRATION, plain) == _contract_verdict(Family.REGISTRATION, plain)
    assert _checked_verdict(Family.REGISTRATION, plain)[0] == "unfit"


def test_a_block_with_many_brackets_the_contract_reads_opens_alike() -> None:
    plain = _with_x(b"[" + b",".join([b"[]"] * 300) + b"]")
    assert _checked_verdict(Family.REGISTRATION, plain) == _contract_verdict(Family.REGISTRATION, plain)
    assert _checked_verdict(Family.REGISTRATION, plain)[0] == "opened"


@pytest.mark.parametrize("number", [b"NaN", b"1e400", b"-Infinity"])
def test_a_block_with_a_number_json_has_not_is_unfit(number: bytes) -> None:
    """pydantic reads NaN and 1e400 in a field the block's contract does not know; the opener then parsed
    the block with orjson, whose ``JSONDecodeError`` stopped the shared view (Review 7)."""
    assert _checked_verdict(Family.REGISTRATION, _with_x(number)) == ("unfit", "personal: not valid JSON")


@pytest.mark.parametrize("length", [25, 29, 16381])
def test_a_ciphertext_of_4n_plus_1_characters_keeps_the_block_shut(length: int) -> None:
    """No base64 reads a ciphertext of 4n+1 characters: ``_unb64`` raised ``binascii.Error`` out of the
    opener, which stopped the shared view on arrival and failed a feed delivery's whole individual list
    (``consumers.feed.delivery`` opens blocks stored unopened). The block stays shut (Review 7)."""
    sealed = {"alg": "A256GCM", "kid": f"pdk-{PERSON}-1", "nonce": "A" * 16, "ct": "A" * length}
    opener = Opener({PERSON: KEY})
    assert opener(PERSON, Family.REGISTRATION.value, sealed) is None
    assert opener.checked(PERSON, Family.REGISTRATION.value, sealed) is None
