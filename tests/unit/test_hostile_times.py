"""Instants at the edge of datetime's range, from a hostile writer.

``Timestamp`` was any aware datetime, so the contract accepted ``0001-01-01T00:00:00+23:59``; turning it to
UTC (``ErasureClaim.statement``) or JST (P6) raised ``OverflowError``, which ``ErasureVerifier.refusal`` did not
catch and the consumers' runtime does not dead-letter: a consumer stopped on that record, after every
restart; the erasure follower's task ended silently (its process kept erased people's data keys); the
adapters' group commit answered 5xx to every request of the group. Now every reader — the contract, the
consume side's quick decoders, the envelope's ``ce_time`` — refuses instants outside 2000–2099 (naming the
field and the rule, never the value), and what reads times on behalf of a signature or a follower cannot
be stopped by one.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts import wire
from contracts.envelope import PoisonMessage, decode, encode
from contracts.events import Consent, Erasure
from contracts.types import EARLIEST_INSTANT, END_OF_INSTANTS, in_supported_range
from infra import health
from infra.config import get_settings
from infra.signing import NOT_SIGNED_HERE, erasure_verifier
from producers.submission import to_event
from tests import factories

EDGES = [
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "1999-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z",
]


def _erasure_at(erased_at: str) -> tuple[bytes, Any, bytes]:
    genuine = to_event(factories.erasure(factories.person_key()), None)
    key, headers, value = encode(genuine)
    start = value.index(b'"erased_at":"') + len(b'"erased_at":"')
    return key, headers, value[:start] + erased_at.encode() + value[value.index(b'"', start) :]


@pytest.mark.parametrize("erased_at", EDGES)
@pytest.mark.parametrize("fast", [True, False])
def test_an_erasure_at_the_edge_of_time_is_dead_lettered_naming_field_and_rule(
    erased_at: str, fast: bool
) -> None:
    key, headers, value = _erasure_at(erased_at)
    with pytest.raises(PoisonMessage) as refused:
        decode(key, headers, value, fast=fast)
    reason = str(refused.value)
    assert "erased_at" in reason and "2000-01-01" in reason
    assert erased_at not in reason and erased_at[:10] not in reason


@pytest.mark.parametrize("erased_at", EDGES)
def test_the_quick_decoder_refuses_what_the_contract_refuses(erased_at: str) -> None:
    _, _, value = _erasure_at(erased_at)
    with pytest.raises(wire.Invalid):
        wire.DATA["erasure"].decode(value)
    with pytest.raises(ValidationError):
        Erasure.model_validate_json(value)


def test_the_supported_range_is_inclusive_at_its_start_and_exclusive_at_its_end() -> None:
    for inside in ("2000-01-01T00:00:00Z", "2000-01-01T09:00:00+09:00", "2099-12-31T23:59:59.999999Z"):
        _, _, value = _erasure_at(inside)
        assert Erasure.model_validate_json(value).erased_at == datetime.fromisoformat(inside)
        assert wire.DATA["erasure"].decode(value).erased_at == datetime.fromisoformat(inside)


def test_a_consent_signed_at_the_edge_of_time_is_refused_by_the_contract() -> None:
    consent = factories.consent(factories.person_key()).data
    hostile = consent | {"captured": consent["captured"] | {"signed_at": "0001-01-01T00:00:00+23:59"}}
    with pytest.raises(ValidationError) as refused:
        Consent.model_validate(hostile)
    (error,) = refused.value.errors(include_input=False)
    assert error["loc"] == ("captured", "signed_at") and "2000-01-01" in error["msg"]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("ce_time", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
def test_an_envelope_time_at_the_edge_of_time_is_dead_lettered(ce_time: str, fast: bool) -> None:
    key, headers, value = _erasure_at("2026-01-01T00:00:00Z")
    headers = [(n, ce_time.encode() if n == "ce_time" else v) for n, v in headers]
    with pytest.raises(PoisonMessage) as refused:
        decode(key, headers, value, fast=fast)
    assert "ce_time" in str(refused.value) and ce_time not in str(refused.value)


def test_a_signature_over_a_time_no_statement_can_hold_is_refused_not_raised(monkeypatch: Any) -> None:
    """Should an instant past the range ever reach the verifier, it is not signed here — never raised."""
    key, headers, value = _erasure_at("2026-01-01T00:00:00Z")
    event = decode(key, headers, value, fast=True)
    overflowing = type(event.data)(**{
        **{f: getattr(event.data, f) for f in event.data.__struct_fields__},
        "erased_at": datetime.fromisoformat("0001-01-01T00:00:00+23:59"),
    })  # fmt: skip
    assert erasure_verifier(get_settings()).refusal(event._replace(data=overflowing)) == NOT_SIGNED_HERE


def test_the_erasure_follower_skips_a_record_its_verifier_cannot_read(monkeypatch: Any) -> None:
    """The follower called the verifier outside its guard: an error there ended it."""
    from infra.erasure_follower import ErasureFollower

    follower = ErasureFollower(get_settings())

    def broken(event: Any) -> bool:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(follower.verifier, "verify", broken)
    follower._apply(*_erasure_at("2026-01-01T00:00:00Z"))
    assert follower.forgotten == 0 and follower.unreadable == 1


async def test_a_dead_erasure_follower_makes_its_process_not_ready(monkeypatch: Any) -> None:
    """Its task ran bare: ended by an error, the process stayed ready while keeping erased people's keys."""
    from infra.erasure_follower import ErasureFollower
    from infra.http import follow_erasures

    follower = ErasureFollower(get_settings())

    async def dies() -> None:
        raise RuntimeError("a fault nobody foresaw")

    monkeypatch.setattr(follower, "run", dies)
    try:
        task = follow_erasures(follower)
        with pytest.raises(RuntimeError):
            await task
        await asyncio.sleep(0)  # done callbacks run on the loop's next turn
        assert health.failing() == {"erasure-follower": "stopped: RuntimeError"}
    finally:
        health.forget("erasure-follower")


_NEAR_THE_EDGES = st.builds(
    lambda edge, shift: edge + shift,
    st.sampled_from([datetime(2000, 1, 1), datetime(2100, 1, 1)]),
    st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=2)),
)


@settings(max_examples=1000, deadline=None)
@given(
    local=st.one_of(
        _NEAR_THE_EDGES, st.datetimes(min_value=datetime(1998, 1, 1), max_value=datetime(2101, 12, 31))
    ),
    offset=st.timedeltas(min_value=timedelta(hours=-24), max_value=timedelta(hours=24)).filter(
        lambda o: abs(o) < timedelta(hours=24)
    ),
)
def test_the_range_check_is_the_comparison_of_instants_at_every_offset(
    local: datetime, offset: timedelta
) -> None:
    """``in_supported_range`` reads an instant's own year before comparing across offsets: held equal to the
    comparison itself, at the range's edges and with any offset (less than a day either way)."""
    instant = local.replace(tzinfo=timezone(offset))
    assert in_supported_range(instant) == (EARLIEST_INSTANT <= instant < END_OF_INSTANTS)
