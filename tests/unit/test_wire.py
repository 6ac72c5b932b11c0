"""The consumers' fast decoder (``contracts.wire``) reads exactly what the pydantic contract reads.

Three sources of documents: every example of the committed JSON Schemas put into a valid event, the
simulator's stream, and ``hypothesis`` mutations of valid events (wrong types, near-miss codes, Unicode
digits, a final newline, dropped and extra fields). The property, for each document:

* the fast decoder accepts it  ⇒  the contract accepts it, with the same values;
* the contract refuses it  ⇒  ``decode(..., fast=True)`` (what the runtime calls) refuses it with the
  contract's own reason, so it is dead-lettered exactly as before.
"""

from __future__ import annotations

import copy
import json
import os
import re
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_case
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from contracts import wire
from contracts.envelope import (
    MODELS,
    PERSONAL_MODELS,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    Event,
    Family,
    PoisonMessage,
    decode,
    encode,
)
from contracts.types import INSTANT_PATTERN
from devtools.simulator import SimulationConfig, simulate
from producers.submission import to_event
from tests import factories

SCHEMAS = Path(__file__).resolve().parents[2] / "contracts" / "schemas"


def _plain(value: Any) -> Any:
    """Struct or model data as comparable Python values (times with their offsets)."""
    if isinstance(value, msgspec.Struct):
        return {f: _plain(getattr(value, f)) for f in value.__struct_fields__}
    if isinstance(value, BaseModel):
        return {f: _plain(getattr(value, f)) for f in type(value).model_fields}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return (type(value).__name__, value.value)
    if isinstance(value, datetime):
        return (value.isoformat(), value.utcoffset())
    if isinstance(value, date):
        return value.isoformat()
    return value


def _verdicts(family: Family, value: bytes) -> tuple[Any, BaseModel | None, str | None]:
    """(fast struct or None, contract model or None, contract's refusal or None)."""
    try:
        fast = wire.DATA[family.value].decode(value)
    except wire.Invalid:
        fast = None
    try:
        model = MODELS[family].model_validate_json(value)
        refusal = None
    except ValidationError as exc:
        model, refusal = None, str(exc)
    return fast, model, refusal


def _assert_same(family: Family, value: bytes, *, canonical: bool = False) -> None:
    fast, model, _ = _verdicts(family, value)
    if fast is not None:
        assert model is not None, f"fast decoder accepted what the contract refuses: {value!r}"
        assert _plain(fast) == _plain(model)
    elif canonical:
        assert model is None, f"fast decoder refused a canonical document the contract accepts: {value!r}"


def _record(event: Event, data: dict[str, Any] | None = None) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    key, headers, value = encode(event)
    return key, headers, value if data is None else orjson.dumps(data)


def _assert_dead_lettered_alike(event: Event, data: Any) -> None:
    """The runtime's decode refuses what the contract refuses, with the contract's reason."""
    key, headers, _ = encode(event)
    value = orjson.dumps(data)
    try:
        slow = decode(key, headers, value)
    except PoisonMessage as poison:
        with pytest.raises(PoisonMessage) as fast:
            decode(key, headers, value, fast=True)
        assert fast.value.reason == poison.reason
        return
    fast_event = decode(key, headers, value, fast=True)
    assert _plain(fast_event.data) == _plain(slow.data)
    assert (fast_event.id, fast_event.subject, fast_event.time) == (slow.id, slow.subject, slow.time)


# --- a valid event of each family, from the simulator -------------------------------------------

_STREAM = SimulationConfig(authorities=3, months=3, seed=11, registrations_per_site_month=12)


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    keys: dict[str, bytes] = {}
    subs = list(simulate(_STREAM))
    # The simulator sends what clients send; erasures come from the hub's operator side (``hub erase``).
    subs += [factories.erasure(s.person_key) for s in subs[:: len(subs) // 5]]
    return [to_event(s, keys.setdefault(s.person_key, os.urandom(32))) for s in subs]


def _samples(stream: list[Event]) -> dict[Family, list[Event]]:
    out: dict[Family, list[Event]] = {}
    for e in stream:
        out.setdefault(e.family, []).append(e)
    return out


def test_the_simulators_stream_reads_the_same(stream: list[Event]) -> None:
    assert {e.family for e in stream} == set(Family)
    for event in stream:
        key, headers, value = encode(event)
        fast, model, _ = _verdicts(event.family, value)
        assert fast is not None and model is not None
        assert _plain(fast) == _plain(model)
        assert _plain(decode(key, headers, value, fast=True).data) == _plain(event.data)


def test_the_decoders_one_parse_is_kept_for_a_consumer_that_takes_plain_data(stream: list[Event]) -> None:
    """A record is parsed once: the decoder's parse (what ``orjson`` gives, which consumers read) is the
    event's ``parsed`` where asked for, on the quick path and the whole way alike, and nowhere else."""
    for event in stream:
        key, headers, value = encode(event)
        for fast in (True, False):
            kept = decode(key, headers, value, fast=fast, keep_parsed=True)
            assert kept.parsed == orjson.loads(value)
            assert decode(key, headers, value, fast=fast).parsed is None
        # another header order: the quick path leaves it to the whole way, which keeps its parse too
        assert decode(key, headers[::-1], value, fast=True, keep_parsed=True).parsed == orjson.loads(value)


# --- every example of the committed JSON Schemas -------------------------------------------------


def _examples(schema: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """(path within the event, example) for each field example; paths go through nested objects."""
    defs = schema.get("$defs", {})

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        found = [(path, ex) for ex in node.get("examples", [])]
        for option in node.get("anyOf", []):
            found += walk(option, path)
        for name, sub in node.get("properties", {}).items():
            found += walk(sub, (*path, name))
        return found

    return walk(schema, ())


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    for name in path[:-1]:
        node = node.setdefault(name, {})
    node[path[-1]] = value
    return out


def test_every_json_schema_example_reads_the_same(stream: list[Event]) -> None:
    samples = _samples(stream)
    checked = 0
    for family in Family:
        schema = json.loads((SCHEMAS / f"{family.value}.v1.json").read_text())
        examples = _examples(schema)
        assert examples, family
        base = orjson.loads(encode(samples[family][0])[2])
        for path, example in examples:
            data = _put(base, path, example)
            _assert_same(family, orjson.dumps(data), canonical=True)
            _assert_dead_lettered_alike(samples[family][0], data)
            checked += 1
    assert checked >= 15


# --- hypothesis: mutations of valid events ---------------------------------------------------------

_NEAR_MISS = st.sampled_from(
    [
        "131041",
        "131040",
        "112039",
        "1301",
        "１３０１",  # full-width digits
        "131041-01",
        "131041-01\n",  # Python's $ matches before a final newline; the contract's does not
        "112038-01",
        "06",
        "16",
        "０６",
        "MHLW-2022",
        "MHLW-2011",
        "A256GCM",
        "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d",
        "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d\n",
        "3F2A9C0D5B1E4F6A8C7D9E0F1A2B3C4D",
        "2025-04-01",
        "2025-4-1",
        "2025-02-30",
        "2025-04-01T09:00:00+09:00",
        "2025-04-01T09:00:00",
        "2025-04-01T09:00:00.1234567+09:00",
        "2025-04-01 09:00:00Z",
        "2025-04-01T24:00:00+09:00",
        # dates and times in another spelling or year (the contract takes one spelling, years 2000-2099)
        "2026-04-01T00:00:00",
        "2026-04-01T00:00:00Z",
        "1775001600",
        "0001-01-01",
        "9999-12-31",
        "1999-12-31",
        "2100-01-01",
        "２０２６-04-01",
        "2026-04-01t09:00:00z",
        "2026-04-01T09:00:00+0900",
        "2026-04-01T09:00Z",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59Z",
        "female",
        "withdrawn",
        "given",
        "left",
        "employed",
        "authority",
        "office",
        "share_registration",
        "public_assistance",
        "35-39",
        "true",
        "",
        " ",
        "\x00",
    ]
)
_SCALAR = st.one_of(
    _NEAR_MISS,
    st.text(max_size=12),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from(
        [0, 1, 3, 6, 7, 1.0, 3.0, 2.5, True, False, None, 2**31, 2**63, 1775001600, 1775001600.0]
    ),
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _tweaks(text: str) -> st.SearchStrategy[str]:
    """Near misses of a valid string: what a careless or hostile producer would send."""
    i = len(text) // 2
    full = text.translate({c: c + 0xFEE0 for c in range(0x30, 0x3A)})  # digits → full-width digits
    return st.sampled_from(
        [
            text + "\n",
            text + " ",
            " " + text,
            text[:-1],
            text + text[-1],
            text.upper(),
            full,
            text[:i] + "\x00" + text[i:],
            text[:i] + "x" + text[i + 1 :],
            text[:i] + "9" + text[i + 1 :],
        ]
    )


def _paths(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(data, dict):
        for k, v in data.items():
            found += _paths(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _paths(v, (*path, i))
    return found


@st.composite
def _mutated(draw: st.DrawFn, samples: dict[Family, list[Event]]) -> tuple[Event, Any]:
    family = draw(st.sampled_from(sorted(samples)))
    event = draw(st.sampled_from(samples[family]))
    data = orjson.loads(encode(event)[2])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["tweak", "tweak", "near", "replace", "drop", "duplicate"]))
        old = parent[path[-1]]
        if action == "tweak" and isinstance(old, str) and old:
            parent[path[-1]] = draw(_tweaks(old))
        elif action == "near":
            parent[path[-1]] = draw(_NEAR_MISS)
        elif action == "replace":
            parent[path[-1]] = draw(_VALUE)
        elif action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    if draw(st.booleans()):
        data = (
            {**data, draw(st.text(min_size=1, max_size=8)): draw(_VALUE)} if isinstance(data, dict) else data
        )
    return event, data


_FUZZ: dict[Family, list[Event]] = {}


def _fuzz_samples() -> dict[Family, list[Event]]:
    if not _FUZZ:
        keys: dict[str, bytes] = {}
        for s in simulate(SimulationConfig(authorities=2, months=2, seed=5, registrations_per_site_month=6)):
            e = to_event(s, keys.setdefault(s.person_key, os.urandom(32)))
            _FUZZ.setdefault(e.family, []).append(e)
    return _FUZZ


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated(_fuzz_samples()))
def test_fuzz_the_fast_decoder_never_accepts_what_the_contract_refuses(case: tuple[Event, Any]) -> None:
    event, data = case
    _assert_same(event.family, orjson.dumps(data))
    _assert_dead_lettered_alike(event, data)


# --- hypothesis: every date and time field, in every spelling ---------------------------------------

_DATE_TIME_FIELDS: dict[Family, list[tuple[str, ...]]] = {
    Family.REGISTRATION: [("registered_on",)],
    Family.CONSENT: [("valid_from",), ("valid_until",), ("captured", "signed_at")],
    Family.REFERRAL: [("referred_on",), ("team_support_from",)],
    Family.PLACEMENT: [("placed_on",)],
    Family.RETENTION: [("checked_on",), ("left_on",)],
}
_OFFSETS = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
)


def _spelled(moment: datetime, sep: str, spec: str, zone: str) -> str:
    """``moment`` written with ``sep`` between day and time, to ``spec``, and its offset as ``zone`` says."""
    if zone == "naive":
        return moment.replace(tzinfo=None).isoformat(sep=sep, timespec=spec)
    text = moment.isoformat(sep=sep, timespec=spec)
    if zone in ("Z", "z") and text.endswith("+00:00"):
        return text[:-6] + zone
    if zone == "compact":  # +0900
        return text[:-3] + text[-2:]
    return text


_DATE_SPELLINGS = st.one_of(
    st.dates().map(date.isoformat),  # any year, 0001 to 9999
    st.dates(min_value=date(1998, 1, 1), max_value=date(2101, 12, 31)).map(date.isoformat),
    st.dates().map(lambda d: f"{d.isoformat()}T00:00:00"),
    st.builds(
        _spelled,
        st.one_of(
            st.datetimes(timezones=_OFFSETS),
            st.datetimes(
                min_value=datetime(1999, 12, 30), max_value=datetime(2100, 1, 2), timezones=_OFFSETS
            ),
        ),
        st.sampled_from(["T", "T", " ", "t"]),
        st.sampled_from(["auto", "seconds", "minutes", "hours", "microseconds", "milliseconds"]),
        st.sampled_from(["offset", "offset", "Z", "z", "naive", "compact"]),
    ),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(min_value=0, max_value=2**33),
    st.sampled_from(["2026-04-01", "2026-04-01T09:00:00+09:00"]).flatmap(_tweaks),
)


@st.composite
def _redated(draw: st.DrawFn, samples: dict[Family, list[Event]]) -> tuple[Event, Any, tuple[str, ...], Any]:
    family = draw(st.sampled_from(sorted(_DATE_TIME_FIELDS)))
    event = draw(st.sampled_from(samples[family]))
    data = orjson.loads(encode(event)[2])
    path = draw(st.sampled_from(_DATE_TIME_FIELDS[family]))
    value = draw(_DATE_SPELLINGS)
    where = data
    for step in path[:-1]:
        where = where[step]
    where[path[-1]] = value
    return event, data, path, value


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_redated(_fuzz_samples()))
def test_fuzz_dates_and_times_take_one_spelling_in_every_reader(
    case: tuple[Event, Any, tuple[str, ...], Any],
) -> None:
    """Whatever is put in a date or time field: the contract accepts only the one spelling in range, the
    fast decoder never accepts what the contract refuses, and both decodes dead-letter it alike."""
    event, data, path, value = case
    value_bytes = orjson.dumps(data)
    _, model, _ = _verdicts(event.family, value_bytes)
    if model is not None:
        got = model
        for step in path:
            got = getattr(got, step)
        assert isinstance(value, str), "a number was read as a date or time"
        if isinstance(got, datetime):
            assert re.fullmatch(INSTANT_PATTERN, value) and 2000 <= got.astimezone(UTC).year <= 2099
        else:
            assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value) and 2000 <= got.year <= 2099
    _assert_same(event.family, value_bytes)
    _assert_dead_lettered_alike(event, data)


# --- the quick checks before the patterns' regexes ----------------------------------------------------


def _patterns(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return found.union(*(_patterns(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_patterns(v) for v in node))
    return set()


_QUICK = sorted(
    p
    for model in [*MODELS.values(), *PERSONAL_MODELS.values()]
    for p in _patterns(model.model_json_schema())
    if wire.quick_check(p) is not None
)


def test_the_patterns_of_ids_keys_and_ciphertexts_have_quick_checks() -> None:
    """Not vacuous: the unique values of every event (ids, person keys, nonces, ciphertexts) and the
    printable texts are the ones checked quickly, and a valid one passes the quick check itself."""
    from contracts.types import PRINTABLE_PATTERN

    assert {r"^[0-9a-f]{32}$", r"^[A-Za-z0-9_-]{16}$", r"^[A-Za-z0-9_-]+$", PRINTABLE_PATTERN} <= set(_QUICK)
    assert {r"^\d{6}$", r"^\d{4}$", r"^[A-Za-z0-9_-]{86}$"} <= set(_QUICK)
    for pattern, valid in [
        (r"^[0-9a-f]{32}$", "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"),
        (r"^[A-Za-z0-9_-]+$", "AbC-_09"),
        (r"^\d{6}$", "131041"),
        (PRINTABLE_PATTERN, "common-form 2016.1 東京"),
    ]:
        check = wire.quick_check(pattern)
        assert check is not None and check(valid), pattern


def _near(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).flatmap(
        lambda valid: st.one_of(st.just(valid), _tweaks(valid) if valid else st.just(valid))
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_QUICK).flatmap(lambda p: st.tuples(st.just(p), st.one_of(_near(p), st.text()))))
def test_fuzz_a_quick_check_passes_only_what_its_pattern_matches(case: tuple[str, str]) -> None:
    """A quick check is a sufficient condition: whatever it passes, the regex (the contract's pattern,
    whole-value) matches; what it does not pass goes to the regex."""
    pattern, value = case
    check = wire.quick_check(pattern)
    assert check is not None
    if check(value):
        assert re.fullmatch(pattern, value) is not None, (pattern, value)


# --- the derivation refuses rules it does not know --------------------------------------------------


def test_a_rule_the_derivation_does_not_know_stops_it() -> None:
    from pydantic import ConfigDict, Field, field_validator

    class Stripped(BaseModel):
        model_config = ConfigDict(extra="ignore")
        code: str = Field(max_length=4)

        @field_validator("code", mode="before")
        @classmethod
        def _strip(cls, value: Any) -> Any:
            return value.strip() if isinstance(value, str) else value

    with pytest.raises(TypeError, match="after-validators"):
        wire.struct_for(Stripped)


def test_lax_spellings_are_refused_by_both_alike(stream: list[Event]) -> None:
    """Where pydantic used to coerce and msgspec did not (a Unix time for an instant, a midnight datetime
    for a date, a float or ``true`` for a version, ``"true"`` for yes): the contract now takes one spelling
    too, so both refuse, for the same reason."""
    samples = _samples(stream)
    consent = orjson.loads(encode(samples[Family.CONSENT][0])[2])
    registration = orjson.loads(encode(samples[Family.REGISTRATION][0])[2])
    signed_at = datetime.fromisoformat(consent["captured"]["signed_at"])
    for event, data in [
        (samples[Family.CONSENT][0], {**consent, "captured": {**consent["captured"], "signed_at": int(signed_at.timestamp())}}),
        (samples[Family.REGISTRATION][0], {**registration, "registered_on": f"{registration['registered_on']}T00:00:00"}),
        (samples[Family.CONSENT][0], {**consent, "version": float(consent["version"])}),
        (samples[Family.CONSENT][0], {**consent, "version": True}),
        (samples[Family.REGISTRATION][0], {**registration, "team_support": "true"}),
    ]:  # fmt: skip
        assert _verdicts(event.family, orjson.dumps(data))[:2] == (None, None)
        _assert_dead_lettered_alike(event, data)


# --- hypothesis: hostile headers, with and without the checked-value memo ------------------------------

_HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"1.0",
            b"1.0\n",
            b"2.0",
            b"jp.ittai.registration.v1",
            b"jp.ittai.consent.v1\x00",
            b"jp.ittai.referral.v2",
            b"/authorities/131041",
            "/authorities/13104１".encode(),
            b"/authorities/131041\n",
            b"/hellowork/offices/1301",
            b"/hellowork/national",
            b"application/json",
            b"\xff\xfe",
            b"x" * 300,
            b"",
        ]
    ),
    st.binary(max_size=24),
    st.none(),
)


@st.composite
def _hostile_headers(draw: st.DrawFn, samples: dict[Family, list[Event]]) -> tuple[Event, list[Any]]:
    family = draw(st.sampled_from(sorted(samples)))
    event = draw(st.sampled_from(samples[family]))
    _, headers, _ = encode(event)
    out: list[Any] = list(headers)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        name = draw(st.sampled_from(["ce_specversion", "ce_type", "ce_source", "content-type", "ce_id"]))
        action = draw(st.sampled_from(["replace", "repeat", "drop"]))
        value = draw(_HEADER_VALUES)
        if action == "replace":
            out = [(n, value if n == name else v) for n, v in out]
        elif action == "repeat":
            out.append((name, value))
        else:
            out = [(n, v) for n, v in out if n != name]
    return event, out


def _verdict(event: Event, headers: list[Any]) -> tuple[str, Any]:
    key, _, value = encode(event)
    try:
        decoded = decode(key, headers, value, fast=True)
    except PoisonMessage as poison:
        return "refused", poison.reason
    return "accepted", (decoded.id, decoded.source, decoded.type, decoded.family)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile_headers(_fuzz_samples()))
def test_fuzz_headers_a_value_checked_once_is_judged_the_same_every_time(
    case: tuple[Event, list[Any]],
) -> None:
    """Repeating header values (spec version, type, source, content type) are checked once and then
    remembered: a hostile header must get the same verdict, and the same reason, from a cold memo as
    after every valid value of the stream was remembered."""
    from contracts import envelope

    event, headers = case
    envelope._PASSED.clear()
    cold = _verdict(event, headers)
    for sample in (e for events in _fuzz_samples().values() for e in events):
        _verdict(sample, list(encode(sample)[1]))  # every valid value of the stream remembered
    assert _verdict(event, headers) == cold
    assert _verdict(event, headers) == cold


# --- hypothesis: the canonical-record path judges every envelope as the whole way does ---------------

_TIME_VALUES = [
    b"2025-04-01T09:00:00+09:00",
    b"2025-04-01T09:00:00.123456+09:00",
    b"2025-04-01T09:00:00.1234567+09:00",
    b"2025-04-01T09:00:00Z",
    b"2025-04-01T09:00:00",
    b"2025-04-01 09:00:00+09:00",
    b"2025-04-01\x0009:00:00+09:00",  # Python's fromisoformat takes any separator, the envelope does not
    b"2025-04-01\n09:00:00+09:00",
    b"2025-04-01T09:00:00+24:00",
    b"2025-04-01T09:00:00+09:00\n",
    b"2025-04-01T25:00:00+09:00",
    b"2025-02-30T09:00:00+09:00",
    b"20250401T090000+0900",
    "2025-04-01T09:00:00＋09:00".encode(),
    "2025-04-01T09:00:00+09:00\u00a0".encode(),  # a printable space outside ASCII
    "2025-04-01\u300009:00:00+09:00".encode(),
    b"2025-04-01 09:00:00+09:00 ",
    b"2025-04-01t09:00:00+09:00",
    b"2025-04-01\x7f09:00:00+09:00",
    b"2025-04-01T09:00:00.123+09:00",
    b"2025-04-01T09:00:00,5+09:00",
    b"2025-04-01T09:00+09:00",
    b"2025-W14-2T09:00:00+09:00",
    b"2025-04-01T09:00:00-00:00",
    b"2025-04-01T09:00:00+09:00:30",
    b"2025-04-01T09:00:00+09:00" + b"0" * 240,
    b"2025-04-01T09:00:00." + b"1" * 231 + b"+09:00",  # 256 characters: fromisoformat reads it
    b"2025-04-01T09:00:00." + b"1" * 232 + b"+09:00",  # 257: the envelope's header limit refuses it
]
_TIMES = st.sampled_from(_TIME_VALUES)
_ID_VALUES = [
    b"3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d",
    b"3F2A9C0D5B1E4F6A8C7D9E0F1A2B3C4D",
    b"3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4",
    b"3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d\n",
    b"3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4g",
    b"3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4\x00",
    "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4ｄ".encode(),
    "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4\u00e9".encode(),
]
_IDS = st.sampled_from(_ID_VALUES)
_ENVELOPE_NAMES = [
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_subject",
    "ce_time",
    "content-type",
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    "ce_other",
]


@st.composite
def _hostile_envelopes(
    draw: st.DrawFn, samples: dict[Family, list[Event]]
) -> tuple[bytes | None, list[Any], bytes | None]:
    family = draw(st.sampled_from(sorted(samples)))
    event = draw(st.sampled_from(samples[family]))
    key: bytes | None
    key, headers, value = encode(event)
    out: list[Any] = list(headers)
    if draw(st.booleans()):
        out.append((TRACEPARENT_HEADER, b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
    if draw(st.booleans()):
        time = draw(_TIMES)
        out = [(n, time if n == "ce_time" else v) for n, v in out]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        name = draw(st.sampled_from(_ENVELOPE_NAMES))
        action = draw(st.sampled_from(["replace", "repeat", "drop", "tweak", "move"]))
        special = {"ce_time": _TIMES, "ce_id": _IDS}.get(name)
        given_value = draw(special if special is not None and draw(st.booleans()) else _HEADER_VALUES)
        if action == "move":  # another order than ``encode``'s: the same event, or the same refusal
            moved = [h for h in out if h[0] == name]
            rest = [h for h in out if h[0] != name]
            at = draw(st.integers(min_value=0, max_value=len(rest)))
            out = [*rest[:at], *moved, *rest[at:]]
            continue
        if action == "tweak":
            current = dict(out).get(name)
            if isinstance(current, bytes) and current:
                given_value = draw(_tweaks(current.decode(errors="replace"))).encode()
        if action in ("replace", "tweak"):
            out = [(n, given_value if n == name else v) for n, v in out]
        elif action == "repeat":
            out.append((name, given_value))
        else:
            out = [(n, v) for n, v in out if n != name]
    which = draw(st.sampled_from(["same", "same", "none", "other", "subject-of-another"]))
    if which == "none":
        key = None
    elif which == "other":
        key = draw(_HEADER_VALUES)
    elif which == "subject-of-another":
        other = draw(st.sampled_from(samples[family]))
        key = other.subject.encode()
        out = [(n, key if n == "ce_subject" else v) for n, v in out]
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        value = draw(st.sampled_from([None, b"", b"{}", b"null", value + b" ", value[:-1]]))
    return key, out, value


def _judged(key: bytes | None, headers: list[Any], value: bytes | None, *, fast: bool) -> tuple[str, Any]:
    dropped: list[str] = []
    try:
        event = decode(key, headers, value, fast=fast, dropped=dropped)
    except PoisonMessage as poison:
        return "refused", poison.reason
    fields = {f: getattr(event, f) for f in Event._fields if f != "data"}
    fields["time"] = (event.time.isoformat(), event.time.utcoffset())
    return "accepted", (fields, _plain(event.data), dropped)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile_envelopes(_fuzz_samples()))
def test_fuzz_envelopes_the_fast_path_judges_as_the_contract(
    case: tuple[bytes | None, list[Any], bytes | None],
) -> None:
    """``decode(fast=True)`` (what the runtime calls) first tries the record as ``encode`` writes it, in a
    few C calls. Over hostile keys, headers (times with control characters among them) and values it
    must give the verdict of the whole way: the same event, or the same reason."""
    key, headers, value = case
    assert _judged(key, headers, value, fast=True) == _judged(key, headers, value, fast=False)


def _one_defect_each(event: Event) -> list[tuple[bytes | None, list[Any], bytes | None]]:
    """A valid record with one header changed, dropped, repeated or moved: every header, every value of
    the lists above and the near misses of its own value."""
    key, headers, value = encode(event)
    headers = [*headers, (TRACEPARENT_HEADER, b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    cases: list[tuple[bytes | None, list[Any], bytes | None]] = []
    for i, (name, current) in enumerate(headers):
        text = current.decode()
        near = [
            text + "\n", text + " ", " " + text, text[:-1], text + text[-1], text.upper(),
            text.translate({c: c + 0xFEE0 for c in range(0x30, 0x3A)}),
            text[: len(text) // 2] + "\x00" + text[len(text) // 2 :],
        ]  # fmt: skip
        values = [*_TIME_VALUES, *_ID_VALUES, *(v.encode() for v in near), None, b"", b"\xff\xfe"]
        for v in values:
            cases.append((key, [*headers[:i], (name, v), *headers[i + 1 :]], value))
        rest = [*headers[:i], *headers[i + 1 :]]
        cases.append((key, rest, value))
        cases.append((key, [*headers, (name, current)], value))
        cases += [(key, [*rest[:at], (name, current), *rest[at:]], value) for at in range(len(rest) + 1)]
        for other in [*(n for n, _ in headers if n != name), "ce_other", name.upper()]:  # renamed
            cases.append((key, [*headers[:i], (other, current), *headers[i + 1 :]], value))
    another = factories.person_key().encode()
    for k in [None, b"", another, key + b"\n", key.upper()]:  # the partition key
        cases.append((k, headers, value))
    # key and subject of another person than the data's
    cases.append((another, [(n, another if n == "ce_subject" else v) for n, v in headers], value))
    return cases


def test_envelope_defects_one_at_a_time_are_judged_as_the_contract() -> None:
    """Each of the quick path's checks, one defect at a time (the fuzz above combines them at random):
    the same event or the same reason as the whole way, for every header of every family."""
    checked = 0
    for events in _fuzz_samples().values():
        for key, headers, value in _one_defect_each(events[0]):
            assert _judged(key, headers, value, fast=True) == _judged(key, headers, value, fast=False), (
                headers
            )
            checked += 1
    assert checked > 1000


def _with_note(note: bytes) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    """A consent as ``encode`` writes it, with ``note`` (raw JSON) in a field no contract reads."""
    key, headers, value = encode(to_event(factories.consent(factories.person_key()), None))
    assert value.endswith(b"}")
    return key, headers, value[:-1] + b',"note":' + note + b"}"


@pytest.mark.parametrize("depth", [600, 1500])
def test_a_record_nested_past_the_contracts_limit_is_dead_lettered_by_the_fast_decode(depth: int) -> None:
    """pydantic refuses a value nested past 201 levels (``json_invalid``); msgspec, skipping the field,
    accepted it up to Python's recursion limit and raised ``RecursionError`` past it (Review 7)."""
    key, headers, value = _with_note(b"[" * depth + b"]" * depth)
    with pytest.raises(PoisonMessage) as slow:
        decode(key, headers, value)
    with pytest.raises(PoisonMessage) as fast:
        decode(key, headers, value, fast=True)
    assert fast.value.reason == slow.value.reason == "value: not valid JSON"
    with pytest.raises(wire.Invalid):
        wire.DATA["consent"].decode(value)


@pytest.mark.parametrize(
    "note",
    [
        b"[" * 200 + b"]" * 200,  # as deep as the contract reads
        b"[" + b",".join([b"[]"] * 300) + b"]",  # more brackets than wire.NESTING_MAX, yet shallow
        b'"' + b"{[" * 300 + b'"',  # brackets in text
    ],
)
def test_a_record_with_many_brackets_the_contract_reads_is_accepted_alike(note: bytes) -> None:
    key, headers, value = _with_note(note)
    judged = _judged(key, headers, value, fast=True)
    assert judged[0] == "accepted"
    assert judged == _judged(key, headers, value, fast=False)


@pytest.mark.parametrize("number", [b"NaN", b"1e400", b"-Infinity", b"Infinity", b"-1E+400"])
def test_a_number_json_has_not_in_a_field_no_contract_reads_is_dead_lettered(number: bytes) -> None:
    """pydantic reads these (NaN, inf) where orjson, which consumers parse a value with, raises: the
    shared view and the feed projection stopped on them (Review 7)."""
    key, headers, value = _with_note(number)
    with pytest.raises(PoisonMessage) as slow:
        decode(key, headers, value)
    with pytest.raises(PoisonMessage) as fast:
        decode(key, headers, value, fast=True)
    assert fast.value.reason == slow.value.reason == "value: not valid JSON"


@pytest.mark.parametrize("length", [25, 29, 16381])
def test_a_ciphertext_of_4n_plus_1_characters_is_refused_alike(length: int) -> None:
    """No base64 text is 4n+1 characters long; a rogue record (no key needed) carried one past the contract
    and stopped the shared view, which opens every arriving block (Review 7)."""
    event = to_event(factories.registration(factories.person_key()), os.urandom(32))
    key, headers, value = encode(event)
    data = orjson.loads(value)
    data["personal"] = dict(data["personal"], ct="A" * length)
    value = orjson.dumps(data)
    with pytest.raises(PoisonMessage) as slow:
        decode(key, headers, value)
    with pytest.raises(PoisonMessage) as fast:
        decode(key, headers, value, fast=True)
    assert fast.value.reason == slow.value.reason
    assert "personal.ct" in slow.value.reason and "4n+1" in slow.value.reason, slow.value.reason


# --- hypothesis: the bytes of a value, read straight into the exact struct ---------------------------
# Where no parse is kept, a UTF-8 value is read by msgspec's JSON decoder straight into a struct that
# forbids unknown fields (``wire._exact``), not parsed by orjson and converted. It must never take what
# orjson's parse refuses (a number past a float's range, bytes that are not UTF-8, an integer orjson reads
# as a float), wherever in the value it is, nor give other values (a repeated key: the last one).

_RAW_TOKENS = st.sampled_from(
    [
        b"1e400",
        b"-1E+400",
        b"1e308",
        b"1e-400",
        b"123456789012345678901234567890",
        b"18446744073709551615",
        b"18446744073709551616",
        b"9223372036854775807",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"2147483648",
        b"-0",
        b"0",
        b"1",
        b"3",
        b"3.0",
        b"1E0",
        b"6",
        b"NaN",
        b"Infinity",
        b"null",
        b"true",
        b"[]",
        b"{}",
        b"[1e400]",
        b'{"x":1e400}',
        b'"\xff"',
        b'"\xc3\xa9"',
        b'"\xed\xa0\x80"',  # a surrogate written in UTF-8: not UTF-8
        b'"\xc0\xaf"',  # an overlong form
        b'"\xf4\x90\x80\x80"',  # past U+10FFFF
        b'"\xe5\xb9\xb4"',
        b'"\xef\xbc\x91\xef\xbc\x93\xef\xbc\x90\xef\xbc\x91"',
        b'"\\ud800"',
        b'"\\udc00"',
        b'"\\ud800\\u0041"',
        b'"\\ud83d\\ude00"',
        b'"\\u00e9"',
        b'"\\u0000"',
        b'"\\n"',
        b'"\\/"',
        b'"given"',
        b'"2025-04-01"',
        b'"131041-01"',
        b'"3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"',
    ]
)
_SPACES = st.sampled_from([b" ", b"\t", b"\n", b"\r", b" \r\n\t ", b"\x0c", b"\x0b", b"\xc2\xa0", b"\x00"])


@st.composite
def _mutated_bytes(draw: st.DrawFn, samples: dict[Family, list[Event]]) -> tuple[Event, bytes]:
    family = draw(st.sampled_from(sorted(samples)))
    event = draw(st.sampled_from(samples[family]))
    value = encode(event)[2]
    names = sorted(set(re.findall(rb'"([a-z_]+)":', value)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["field", "repeat", "replace", "space", "escape"]))
        if action in ("field", "repeat"):  # a field (unknown, or a repeated known one) at any object's start
            # or end: a repeated key's last value is the one both readers keep
            name = draw(st.sampled_from([b"note", b"x", *names])) if action == "repeat" else b"note"
            token = draw(_RAW_TOKENS)
            starts = [m.end() for m in re.finditer(rb"\{", value)]
            ends = [m.start() for m in re.finditer(rb"\}", value)]
            if draw(st.booleans()):
                at = draw(st.sampled_from(starts))
                value = value[:at] + b'"' + name + b'":' + token + b"," + value[at:]
            else:
                at = draw(st.sampled_from(ends))
                value = value[:at] + b',"' + name + b'":' + token + value[at:]
        elif action == "replace":  # a known field's value
            name = draw(st.sampled_from(names))
            token = draw(_RAW_TOKENS)
            pattern = rb'("' + name + rb'":)("(?:[^"\\]|\\.)*"|-?[0-9.eE+-]+|true|false|null)'
            value = re.sub(pattern, lambda m, token=token: m.group(1) + token, value, count=1)
        elif action == "space":  # between tokens (JSON's four whitespace bytes; others are refused)
            spots = [m.end() for m in re.finditer(rb"[:,\[\]{}]", value)]
            at = draw(st.sampled_from(spots))
            value = value[:at] + draw(_SPACES) + value[at:]
        else:  # a character of a text written as an escape: the same text
            texts = [m.start() + 1 for m in re.finditer(rb':"[a-z0-9]', value)]
            at = draw(st.sampled_from(texts)) + 1
            value = value[:at] + b"\\u%04x" % value[at] + value[at + 1 :]
    return event, value


def _exact_read(family: Family, value: bytes) -> Any:
    """The data as the exact struct reads it, its checks run, or None where it refuses."""
    reader = wire.DATA[family.value]
    try:
        data = reader.exact(value)
        reader.checks(data)
    except (ValueError, TypeError, AttributeError):  # msgspec.DecodeError is a ValueError
        return None
    return data


def _orjson_then_convert(family: Family, value: bytes) -> Any:
    """The data as orjson's parse converted gives it (the reference read), or None where it refuses."""
    if not wire.shallow_enough(value):
        return None
    try:
        return wire.DATA[family.value].read(orjson.loads(value))
    except (orjson.JSONDecodeError, wire.Invalid):
        return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_bytes(_fuzz_samples()))
def test_fuzz_a_value_read_straight_into_the_exact_struct_is_read_as_orjsons_parse(
    case: tuple[Event, bytes],
) -> None:
    event, value = case
    reference = _orjson_then_convert(event.family, value)
    exact = _exact_read(event.family, value) if wire.utf8(value) else None
    note_case(
        f"exact struct {'took' if exact is not None else 'refused'}; parse {'took' if reference else 'refused'}"
    )
    if exact is not None:
        assert reference is not None, f"the exact struct took what orjson's parse refuses: {value!r}"
        assert _plain(exact) == _plain(reference)
    try:
        fast = wire.DATA[event.family.value].decode(value)
    except wire.Invalid:
        fast = None
    assert (fast is None) == (reference is None)
    if fast is not None:
        assert _plain(fast) == _plain(reference)
    key, headers, _ = encode(event)
    assert _judged(key, headers, value, fast=True) == _judged(key, headers, value, fast=False)


@pytest.mark.parametrize(
    ("note", "field", "verdict"),
    [
        (b"1e400", b"note", "refused"),
        (b"-1E+400", b"note", "refused"),
        (b'{"deeper":[1e400]}', b"note", "refused"),
        (b'"\xff"', b"note", "refused"),
        (b'"\xed\xa0\x80"', b"note", "refused"),
        (b"18446744073709551616", b"note", "accepted"),  # orjson: a float, in a field no contract reads
        (b"9223372036854775808", b"version", "refused"),  # past the contract's int32, read either way
        (b"18446744073709551616", b"version", "refused"),  # a float to orjson: no integer
    ],
)
def test_what_orjson_refuses_anywhere_is_refused_by_the_exact_struct(
    note: bytes, field: bytes, verdict: str
) -> None:
    """msgspec's JSON decoder skips a field no struct has without reading its numbers or checking its
    UTF-8; the exact struct has no such field, and reads integers only as far as orjson does. Where it
    refuses, orjson's parse gives the verdict (a field no contract reads is accepted then)."""
    key, headers, value = encode(to_event(factories.consent(factories.person_key()), None))
    value = value[:-1] + b',"' + field + b'":' + note + b"}"
    with pytest.raises(msgspec.DecodeError):
        wire.DATA["consent"].exact(value)
    assert _judged(key, headers, value, fast=True) == _judged(key, headers, value, fast=False)
    assert _judged(key, headers, value, fast=True)[0] == verdict


def test_a_canonical_value_is_read_straight_into_the_exact_struct(stream: list[Event]) -> None:
    """The hub's own records (as ``encode`` writes them) take the exact struct, with the parse's values."""
    for event in stream:
        value = encode(event)[2]
        assert wire.utf8(value)
        exact = _exact_read(event.family, value)
        assert type(exact) is wire._exact(MODELS[event.family])
        assert _plain(exact) == _plain(_orjson_then_convert(event.family, value))
        assert wire.builtins_of(exact) == wire.builtins_of(_orjson_then_convert(event.family, value))
        assert type(decode(*encode(event), fast=True).data) is type(exact)


# --- session 10: the quick paths' own checks, held to the rules they stand for ------------------------


def _instant_spellings() -> st.SearchStrategy[bytes]:
    """Instants in the one spelling and near misses of it: every offset hour and minute 00-99, seven
    fractional digits, Unicode digits, another separator, a final newline, and any bytes at all."""
    digits = st.text("0123456789", min_size=2, max_size=2)
    near = st.builds(
        lambda date, sep, clock, fraction, sign, hour, minute, tail: (
            date + sep + clock + fraction + (sign + hour + ":" + minute if sign else "Z") + tail
        ).encode(),
        st.sampled_from(["2025-04-01", "1999-12-31", "2O25-04-01", "２025-04-01", "2025-4-01"]),
        st.sampled_from(["T", "t", " ", "\x00"]),
        st.sampled_from(["09:00:00", "23:59:59", "09:00", "09:00:0", "09:00:00:00"]),
        st.sampled_from(["", ".1", ".123456", ".1234567", ".", ",5"]),
        st.sampled_from(["+", "-", "", "\u2212"]),
        digits,
        digits,
        st.sampled_from(["", "\n", " ", ":00", "0"]),
    )
    return st.one_of(
        near, st.binary(max_size=40), st.from_regex(INSTANT_PATTERN, fullmatch=True).map(str.encode)
    )


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_instant_spellings())
def test_fuzz_an_instant_told_from_its_bytes_is_told_as_by_its_pattern(raw: bytes) -> None:
    """``instant_bytes`` (inlined in the envelope's quick path and the fast decoder's time fields) gives the
    verdict of ``INSTANT_PATTERN`` for any bytes, offsets +24:00 and +09:60 (which ``fromisoformat``
    reads) included."""
    from contracts.types import instant_bytes

    by_pattern = re.fullmatch(INSTANT_PATTERN, raw.decode("latin-1")) is not None
    assert instant_bytes(raw) is by_pattern, raw


@pytest.mark.parametrize(
    "offset", [b"+09:60", b"+09:99", b"-00:60", b"+24:00", b"+99:00", b"+23:59", b"-00:00", b"+00:59"]
)
def test_an_offset_out_of_range_is_judged_alike_in_ce_time_and_in_the_data(offset: bytes) -> None:
    """``fromisoformat`` reads an offset's minutes past 59 (+09:60 is +10:00): the quick paths check the
    spelling before it, in the envelope's ``ce_time`` and in a time field of the data."""
    consent = to_event(factories.consent(factories.person_key()), None)
    key, headers, value = encode(consent)
    time = b"2025-04-01T09:00:00" + offset
    in_header = [(n, time if n == "ce_time" else v) for n, v in headers]
    assert _judged(key, in_header, value, fast=True) == _judged(key, in_header, value, fast=False)
    data = orjson.loads(value)
    data["captured"]["signed_at"] = time.decode()
    _assert_same(Family.CONSENT, orjson.dumps(data))
    _assert_dead_lettered_alike(consent, data)
    accepted = offset in (b"+23:59", b"-00:00", b"+00:59")
    assert (_judged(key, in_header, value, fast=True)[0] == "accepted") is accepted


@given(st.text(max_size=40), st.sampled_from(sorted({*_QUICK})))
@settings(max_examples=600, deadline=None)
def test_fuzz_a_quick_check_refuses_every_byte_outside_its_class(text: str, pattern: str) -> None:
    """The quick checks translate a value's UTF-8 bytes with a table that changes every byte outside the
    class: a value with any other byte (0x80-0xFF among them, from any character outside ASCII) is not
    passed quickly, whatever byte it is."""
    check = wire.quick_check(pattern)
    assert check is not None
    for byte in range(256):
        candidate = text + chr(byte)
        if check(candidate):
            assert re.fullmatch(pattern, candidate) is not None, (pattern, candidate)


def test_a_day_range_compared_inline_is_the_range_its_check_holds() -> None:
    """The fast decoder compares a day with the bounds ``DAY_RANGES`` gives instead of calling the check:
    the check refuses exactly the days outside them."""
    from pydantic_core import PydanticCustomError

    from contracts.types import DAY_RANGES

    assert DAY_RANGES
    for check, (first, last) in DAY_RANGES.items():
        for day in [date.min, first - timedelta(days=1), first, last, last + timedelta(days=1), date.max]:
            try:
                check(day)
                held = True
            except PydanticCustomError:
                held = False
            assert held is (first <= day <= last), (check.__name__, day)


def _deep(depth: int) -> list[bytes]:
    return [b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth]


@pytest.mark.parametrize("depth", [300, 100_000])
def test_the_exact_struct_reads_no_deeper_than_its_fields_so_a_deep_value_is_judged_as_the_contract(
    depth: int,
) -> None:
    """The quick paths no longer count a value's brackets before the exact struct reads it (two passes
    over every value): it forbids unknown fields and its fields' types nest a few levels, so msgspec stops
    at the first bracket no field takes, however deep the rest goes. A value nested past the contract's
    limit, in a field no contract reads, in a known field or in a list's item, is refused by it without a
    ``RecursionError`` and dead-lettered by the fast decode with the contract's reason."""
    consent = to_event(factories.consent(factories.person_key()), None)
    key, headers, value = encode(consent)
    for nested in _deep(depth):
        for field in [b"note", b"form_version", b"scopes", b"recipients", b"captured"]:
            data = value[:-1] + b',"' + field + b'":' + nested + b"}"
            with pytest.raises(msgspec.ValidationError):
                wire.DATA["consent"].exact(data)
            with pytest.raises(wire.Invalid):
                wire.DATA["consent"].decode(data)
            assert _judged(key, headers, data, fast=True) == _judged(key, headers, data, fast=False)
            assert _judged(key, headers, data, fast=True)[0] == "refused"
        item = value.replace(b'"scopes":[', b'"scopes":[' + nested + b",", 1)
        assert item != value
        with pytest.raises(msgspec.ValidationError):
            wire.DATA["consent"].exact(item)
        assert _judged(key, headers, item, fast=True) == _judged(key, headers, item, fast=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile_envelopes(_fuzz_samples()), st.booleans())
def test_fuzz_the_runtimes_decode_of_a_batch_judges_each_record_as_the_whole_way(
    case: tuple[bytes | None, list[Any], bytes | None], plain: bool
) -> None:
    """The consumer runtime calls the quick path itself (``decode_canonical``) and the whole way only where
    it declines: each record of a batch is kept with the event the whole way gives, or dead-lettered with
    its reason, whether or not the handler keeps the parse."""
    import asyncio
    from typing import cast

    import asyncpg
    from aiokafka.structs import ConsumerRecord

    from consumers.runtime import ConsumerRuntime, spans_of
    from infra.config import get_settings

    class _Handler:
        name = "decode-fuzz"
        topics = ()
        plain_data = plain

        async def handle(self, conn: Any, batch: Any) -> None:
            raise AssertionError("not committed here")

    key, headers, value = case
    record = ConsumerRecord("t", 0, 7, 0, 0, key, value, None, 0, 0, tuple(headers))
    runtime = ConsumerRuntime(_Handler(), get_settings(), cast(asyncpg.Pool, None))
    batch = asyncio.run(runtime._decode([record], spans_of([record])))
    whole = _judged(key, headers, value, fast=False)
    if whole[0] == "refused":
        assert not batch.good
        assert [d.reason for d in batch.poison] == [whole[1]]
    else:
        assert not batch.poison
        (consumed,) = batch.good
        event = consumed.event
        fields = {f: getattr(event, f) for f in Event._fields if f != "data"}
        fields["time"] = (event.time.isoformat(), event.time.utcoffset())
        expected_fields, expected_data, _ = whole[1]
        if plain:
            assert fields.pop("parsed") == orjson.loads(value or b"null")
            expected_fields = {k: v for k, v in expected_fields.items() if k != "parsed"}
        assert (fields, _plain(event.data)) == (expected_fields, expected_data)
