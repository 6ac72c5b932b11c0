"""Differential fuzz: the consumers' decode against the contract's, record by record (issue 14's must).

What the consumer runtime calls — ``decode_canonical`` (the hub's own records in a few C calls), else
``decode(fast=True)`` (the ``contracts.wire`` structs) — against the whole way (``decode``: the headers
read one by one, the value through the pydantic contract), over hostile records: ``ce_*`` headers
repeated with the same or another valid value (first or last), renamed in another case, empty, NUL, huge,
not UTF-8, missing, unknown extras; values with repeated keys (the first or the last holding another
valid value or a bad one), NaN and Infinity, integers past 2**63, full-width digits, surrogate escapes,
trailing bytes, a BOM, nesting around the contract's limit of 200 levels, 1 MB strings. The verdict must
be the same — the same event with the same data, or the same dead-letter reason.

The shared view and the placement feed act on the decoder's parse of the value (``Event.parsed``), not
on the validated struct: for every accepted record the parse must hold the contract's values, and a field
the contract defaults may be missing from it only — which the consumers' planning must read as the
default (``test_a_document_without_its_defaulted_fields_is_planned_as_the_full_one``; the placement feed
stopped on it, ``tests/integration/test_contract_defaults_consumers.py``).

Derandomized (``derandomize=True``, no example database): the same records in every run.
"""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import date
from typing import Any

import hypothesis
import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from consumers.runtime import Consumed, incoming
from contracts.envelope import (
    MODELS,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    Event,
    Family,
    PoisonMessage,
    decode,
    decode_canonical,
    encode,
)
from domain import feed_projection, shared_view
from producers.submission import to_event
from tests import factories
from tests.unit.test_wire import _fuzz_samples, _plain

FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

Record = tuple[bytes | None, list[Any], bytes | None]


def _runtime(key: bytes | None, headers: list[Any], value: bytes | None, keep: bool) -> Any:
    """What ``ConsumerRuntime._decode`` does with one record: the event, or the refusal's reason."""
    dropped: list[str] = []
    try:
        return decode_canonical(key, headers, value, dropped, keep) or decode(
            key, headers, value, fast=True, dropped=dropped, keep_parsed=keep
        ), dropped
    except PoisonMessage as poison:
        return poison.reason, dropped


def _whole(key: bytes | None, headers: list[Any], value: bytes | None) -> Any:
    dropped: list[str] = []
    try:
        return decode(key, headers, value, dropped=dropped), dropped
    except PoisonMessage as poison:
        return poison.reason, dropped


def _judged(outcome: tuple[Any, list[str]]) -> tuple[str, Any]:
    event, dropped = outcome
    if isinstance(event, str):
        return "refused", event
    fields = {f: getattr(event, f) for f in Event._fields if f not in ("data", "parsed")}
    fields["time"] = (event.time.isoformat(), event.time.utcoffset())
    return "accepted", (fields, _plain(event.data), dropped)


def _contract_fields(dump: Any, parsed: Any, path: str = "") -> list[str]:
    """Where the parse a consumer acts on differs from the contract's reading (its ``model_dump``), by
    path: a value not equal, or a field missing that the contract does not default."""
    if isinstance(dump, list):
        if not isinstance(parsed, list) or len(parsed) != len(dump):
            return [path]
        pairs = enumerate(zip(dump, parsed, strict=True))
        return [d for i, (a, b) in pairs for d in _contract_fields(a, b, f"{path}[{i}]")]
    if isinstance(dump, dict):
        if not isinstance(parsed, dict):
            return [path]
        out = []
        for name, value in dump.items():
            if name not in parsed:
                if name not in _DEFAULTED:
                    out.append(f"{path}.{name} (missing)")
                continue
            out += _contract_fields(value, parsed[name], f"{path}.{name}")
        return out
    return [] if (type(dump) is type(parsed) and dump == parsed) else [path]


_DEFAULTED = {"classification_version", "alg"}  # the contracts' fields with a default other than None


def test_the_defaulted_fields_are_the_contracts_own() -> None:
    """``_DEFAULTED`` is every field a contract defaults to something other than None (a new one must be
    planned as its default by every consumer: the test below)."""
    found: set[str] = set()

    def walk(model: type[BaseModel]) -> None:
        for name, info in model.model_fields.items():
            if not info.is_required() and info.default is not None:
                found.add(name)
            for candidate in _models_in(info.annotation):
                walk(candidate)

    for model in MODELS.values():
        walk(model)
    assert found == _DEFAULTED


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    from typing import get_args

    out: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        a = stack.pop()
        if isinstance(a, type) and issubclass(a, BaseModel):
            out.append(a)
        stack += list(get_args(a))
    return out


_ERASURES: list[Event] = []


def _samples(erasures: bool) -> dict[Family, list[Event]]:
    """The simulator's events of every family and, with ``erasures``, the hub's erasures (signed with the
    local stack's operator key; the simulator makes none) of people of their own."""
    if erasures and not _ERASURES:
        _ERASURES.extend(to_event(factories.erasure(factories.person_key()), None) for _ in range(4))
    samples = _fuzz_samples()
    return {**samples, Family.ERASURE: list(_ERASURES)} if erasures else samples


# --- hostile headers ---------------------------------------------------------------------------------

_REQUIRED = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time", "content-type"]
_HUGE = b"7" * 100_000


def _other_valid(name: str, event: Event, samples: dict[Family, list[Event]]) -> list[bytes]:
    """Values of header ``name`` another valid record has: a repeat with one of these is ambiguous."""
    others = [e for events in samples.values() for e in events if e.id != event.id]
    values = {dict(encode(e)[1])[name] for e in others[:: max(1, len(others) // 12)]}
    return sorted(values - {dict(encode(event)[1])[name]})


_NAME_VARIANTS = st.sampled_from(
    ["upper", "title", "space", "nul", "empty", "surrogate", "prefix", "unknown"]
)


def _renamed(name: str, how: str) -> str:
    return {
        "upper": name.upper(),
        "title": name.title(),
        "space": name + " ",
        "nul": name + "\x00",
        "empty": "",
        "surrogate": name + "\udcff",  # what ``decode(errors="surrogateescape")`` gives a byte not UTF-8
        "prefix": "ce-" + name[3:],
        "unknown": "ce_other",
    }[how]


_BAD_VALUES = st.sampled_from(
    [
        None,
        b"",
        b"\x00",
        b"\xff\xfe",
        b"\xc3",
        "１．０".encode(),
        _HUGE,
        b"1.0\x00",
        b" 1.0",
        b"\xef\xbb\xbf1.0",
    ]
)


@st.composite
def _hostile_headers(draw: st.DrawFn, erasures: bool = True) -> tuple[Event, Record]:
    samples = _samples(erasures)
    family = draw(st.sampled_from(sorted(samples)))
    event = draw(st.sampled_from(samples[family]))
    key, headers, value = encode(event)
    out: list[Any] = list(headers)
    if draw(st.booleans()):
        out.append((TRACEPARENT_HEADER, b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        name = draw(st.sampled_from(_REQUIRED))
        current = dict(out).get(name, dict(headers)[name])
        action = draw(st.sampled_from(["repeat", "repeat-other", "rename", "bad", "drop", "extra"]))
        at = draw(st.integers(min_value=0, max_value=len(out)))
        if action == "repeat":  # the same name and value twice, anywhere
            out.insert(at, (name, current))
        elif action == "repeat-other":  # the same name twice, another valid value first or last
            others = _other_valid(name, event, samples) or [current]
            out.insert(at, (name, draw(st.sampled_from(others))))
        elif action == "rename":
            how = draw(_NAME_VARIANTS)
            out = [(_renamed(n, how) if n == name else n, v) for n, v in out]
        elif action == "bad":
            bad = draw(_BAD_VALUES)
            out = [(n, bad if n == name else v) for n, v in out]
        elif action == "drop":
            out = [(n, v) for n, v in out if n != name]
        else:  # unknown headers, anywhere: ignored by both
            extra = draw(st.sampled_from(["ce_other", "x-custom", "CE_ID", "", "ce_\x00", "dlq_reason"]))
            out.insert(at, (extra, draw(st.one_of(_BAD_VALUES, st.just(current)))))
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        key = draw(st.sampled_from([None, b"", key + b"\x00", key.upper(), _HUGE]))
    return event, (key, out, value)


_TRACE = (TRACEPARENT_HEADER, b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
_STATE = (TRACESTATE_HEADER, b"vendor=1")


def test_every_count_of_headers_around_encodes_is_judged_by_the_runtime_as_by_the_whole_way() -> None:
    """``decode_canonical`` unpacks seven headers (``encode``'s, untraced) apart from eight or nine (the
    trace context after them): each count, and the layouts one header off, give the whole way's verdict,
    and ``encode``'s own layouts are taken by the quick way itself (an equivalence check that can fail)."""
    for events in _samples(erasures=True).values():
        for event in events[:3]:
            key, headers, value = encode(event)
            without_type = [h for h in headers if h[0] != "content-type"]
            layouts = {
                "encode's": (headers, True),
                "traced": ([*headers, _TRACE], True),
                "traced with a state": ([*headers, _TRACE, _STATE], True),
                "a state alone": ([*headers, _STATE], False),
                "six, no content-type": (without_type, False),
                "seven, the trace where content-type was": ([*without_type, _TRACE], False),
                "one more, unknown": ([*headers, ("x-custom", b"1")], False),
                "ten": ([*headers, _TRACE, _STATE, ("x-custom", b"1")], False),
                "one less": (headers[:-2], False),
                "none": ([], False),
            }
            for name, (layout, quick) in layouts.items():
                judged = _judged(_runtime(key, layout, value, False))
                assert judged == _judged(_whole(key, layout, value)), name
                canonical = decode_canonical(key, layout, value, [], False)
                assert (canonical is not None) == quick, name
                if quick:
                    assert _judged((canonical, [])) == _judged(_whole(key, layout, value)), name


@FUZZ
@given(_hostile_headers(), st.booleans())
def test_fuzz_hostile_headers_are_judged_by_the_runtime_as_by_the_whole_way(
    case: tuple[Event, Record], keep: bool
) -> None:
    _, (key, headers, value) = case
    assert _judged(_runtime(key, headers, value, keep)) == _judged(_whole(key, headers, value))


# --- hostile values ----------------------------------------------------------------------------------

_TOKENS = [
    b"NaN",
    b"-Infinity",
    b"Infinity",
    b"1e400",
    b"9223372036854775808",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"123456789012345678901234567890",
    b"2147483648",
    b"1.0",
    b"-0",
    b'"\\ud800"',
    b'"\\udfff"',
    b'"\\ud83d\\ude00"',
    b'"\\u0000"',
    b'"\xed\xa0\x80"',
    b'"\xff"',
    '"１３１０４１"'.encode(),
    '"２０２５-04-01"'.encode(),
    '"０８"'.encode(),
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'"' + b"x" * 1_000_000 + b'"',  # 1 MB
    b"[" * 199 + b"]" * 199,
    b"[" * 200 + b"]" * 200,
    b"[" * 201 + b"]" * 201,
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 202 + b"1" + b"}" * 202,
]
_PREFIXES = [b"\xef\xbb\xbf", b" ", b"\x00", b"\n"]
_SUFFIXES = [b"\n", b" \t\r\n", b"\x00", b" x", b"{}", b"]", b",", b"\xef\xbb\xbf", b"\xff", b"//", b"\n{}"]


_NAME = re.compile(rb'"([a-z_]+)":')
_VALUE_AT = re.compile(rb'"(?:[^"\\]|\\.)*"|-?[0-9.eE+-]+|true|false|null|\{[^{}\[\]]*\}|\[[^\[\]{}]*\]')


def _names_at(value: bytes) -> list[tuple[int, int, bytes]]:
    """Each ``"name":value`` of the document, at any depth (a string, number, literal, or flat object or
    list value): where its value starts and ends, and the name."""
    found = []
    for name in _NAME.finditer(value):
        held = _VALUE_AT.match(value, name.end())
        if held is not None:
            found.append((held.start(), held.end(), name.group(1)))
    return found


def _values_of(name: bytes, samples: dict[Family, list[Event]]) -> list[bytes]:
    """Valid values field ``name`` has in other records (another site, person, date …)."""
    out: set[bytes] = set()
    for events in samples.values():
        for e in events[:6]:
            for start, end, other in _names_at(encode(e)[2]):
                if other == name:
                    out.add(encode(e)[2][start:end])
    return sorted(out)


@st.composite
def _hostile_values(draw: st.DrawFn, erasures: bool = True) -> tuple[Event, Record]:
    samples = _samples(erasures)
    family = draw(st.sampled_from(sorted(samples)))
    event = draw(st.sampled_from(samples[family]))
    key, headers, value = encode(event)
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        spots = _names_at(value)
        if not spots:
            break
        action = draw(
            st.sampled_from(
                ["repeat-first", "repeat-last", "replace", "unknown", "ends", "drop", "drop-default"]
            )
        )
        if action == "drop-default":  # a field the contract defaults, left out: what the adapters never do
            spots = [s for s in spots if s[2].decode() in _DEFAULTED] or spots
            action = "drop"
        start, end, name = draw(st.sampled_from(spots))
        token = draw(
            st.one_of(st.sampled_from(_TOKENS), st.sampled_from(_values_of(name, samples) or [b"null"]))
        )
        pair = b'"' + name + b'":' + token
        if action == "repeat-first":  # the repeat first: the original (last) is the one JSON readers keep
            at = value.rfind(b"{", 0, start) + 1
            value = value[:at] + pair + b"," + value[at:]
        elif action == "repeat-last":  # the repeat last: it is the one kept
            value = value[:end] + b"," + pair + value[end:]
        elif action == "replace":
            value = value[:start] + token + value[end:]
        elif action == "unknown":  # a field no contract reads, holding the token
            value = value[:end] + b',"note":' + token + value[end:]
        elif action == "drop":  # the field left out: required (refused), or defaulted (the parse lacks it)
            at = start - len(name) - 3
            if value[end : end + 1] == b",":
                value = value[:at] + value[end + 1 :]
            elif value[at - 1 : at] == b",":
                value = value[: at - 1] + value[end:]
            else:
                value = value[:at] + value[end:]
        else:
            value = (
                draw(st.sampled_from([*_PREFIXES, b""])) + value + draw(st.sampled_from([*_SUFFIXES, b""]))
            )
    return event, (key, list(headers), value)


@FUZZ
@given(_hostile_values(), st.booleans())
def test_fuzz_hostile_values_are_judged_by_the_runtime_as_by_the_whole_way(
    case: tuple[Event, Record], keep: bool
) -> None:
    """The same event with the same data, or the same reason; and where the runtime keeps the parse for a
    consumer (``keep``), the parse holds the contract's values."""
    event, (key, headers, value) = case
    outcome = _runtime(key, headers, value, keep)
    assert _judged(outcome) == _judged(_whole(key, headers, value))
    decoded = outcome[0]
    if keep and not isinstance(decoded, str):
        assert decoded.parsed == orjson.loads(value)  # the one parse, of these very bytes
        dump = MODELS[event.family].model_validate_json(value).model_dump(mode="json", exclude_none=True)
        assert _contract_fields(dump, decoded.parsed) == []


def test_a_repeated_key_is_read_as_its_last_value_by_every_reader() -> None:
    """JSON leaves a repeated key to the reader: pydantic (jiter), orjson and msgspec all keep the last
    one, in the data and in the parse a consumer acts on, so the person checked is the person applied."""
    samples = _fuzz_samples()
    event, other = samples[Family.PLACEMENT][:2]
    key, headers, value = encode(event)
    forged = value[:-1] + b',"site":' + orjson.dumps(other.data.site) + b"}"
    assert other.data.site != event.data.site
    whole = decode(key, headers, forged)
    fast = decode(key, headers, forged, fast=True, keep_parsed=True)
    assert whole.data.site == fast.data.site == fast.parsed["site"] == other.data.site


# --- the consumers' planning reads a defaulted field as its default ---------------------------------


def _without_defaults(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_defaults(v) for k, v in data.items() if k not in _DEFAULTED}
    if isinstance(data, list):
        return [_without_defaults(v) for v in data]
    return data


def test_a_document_without_its_defaulted_fields_is_planned_as_the_full_one() -> None:
    """The contract accepts a record leaving out ``classification_version`` or ``alg``; the consumers that
    plan on the parse (placement feed, shared view) plan it as the record with them written."""
    pk = factories.person_key()
    events = [
        to_event(s, os.urandom(32))
        for s in [
            factories.registration(pk),
            factories.placement(pk),
            factories.consent(pk),
            factories.referral(pk),
            factories.retention(pk, "a" * 32),
        ]
    ]

    def planned(strip: bool) -> tuple[Any, Any]:
        batch = []
        for i, e in enumerate(events):
            key, headers, value = encode(e)
            if strip:
                value = orjson.dumps(_without_defaults(orjson.loads(value)))
                assert value != encode(e)[2] or e.family not in (Family.PLACEMENT, Family.REGISTRATION)
            decoded = decode_canonical(key, headers, value, None, True) or decode(
                key, headers, value, fast=True, keep_parsed=True
            )
            batch.append(incoming(Consumed(decoded, "t", 0, i, value)))
        feed = feed_projection.plan_batch(batch, feed_projection.FeedState({}, {}, {}, {}, {}))
        view = shared_view.plan_batch(
            batch, shared_view.ViewState(date(2025, 7, 1), frozenset(), frozenset(), {}, {}, {})
        )
        return feed, (
            view.consents,
            [(e.event_id, shown) for e, shown in view.events],
            view.reveal,
            view.rebuild,
        )

    # The feed keeps a sealed block as it came (opened by its nonce and ciphertext alone): the same block.
    assert _sealed_as_full(planned(strip=True)) == planned(strip=False)


def _sealed_as_full(plan: Any) -> Any:
    """``plan`` with each sealed block's defaulted ``alg`` written in."""
    if isinstance(plan, dict):
        out = {k: _sealed_as_full(v) for k, v in plan.items()}
        return {"alg": "A256GCM", **out} if {"kid", "nonce", "ct"} <= set(out) else out
    if dataclasses.is_dataclass(plan) and not isinstance(plan, type):
        return dataclasses.replace(
            plan,
            **{f.name: _sealed_as_full(getattr(plan, f.name)) for f in dataclasses.fields(plan) if f.init},
        )
    if isinstance(plan, tuple):
        items = [_sealed_as_full(v) for v in plan]
        return type(plan)(*items) if hasattr(plan, "_fields") else tuple(items)
    if isinstance(plan, list):
        return [_sealed_as_full(v) for v in plan]
    return plan


def test_the_parse_is_compared_field_by_field() -> None:
    """A guard on the comparison above: it walks models and lists, and tells a changed value apart."""
    event = _fuzz_samples()[Family.CONSENT][0]
    dump = (
        MODELS[Family.CONSENT]
        .model_validate_json(encode(event)[2])
        .model_dump(mode="json", exclude_none=True)
    )
    parsed = orjson.loads(encode(event)[2])
    assert _contract_fields(dump, parsed) == []
    parsed["recipients"][0]["code"] = "x"
    del parsed["captured"]["site"]
    assert _contract_fields(dump, parsed) == [".recipients[0].code", ".captured.site (missing)"]


# --- a repeated envelope attribute ------------------------------------------------------------------


def test_a_repeated_envelope_header_is_refused_by_every_path_whichever_value_comes_first() -> None:
    """CloudEvents attributes are single-valued. The whole way took the last of two ``ce_source`` (or
    ``ce_id``, ``ce_subject`` …) headers, where a reader taking the first — the console's ``dlq_header``
    style, many Kafka tools — would attribute the same record to another organisation or event: an
    ambiguous envelope is refused, naming the header, never a value; a repeat with the same value too."""
    samples = _fuzz_samples()
    for name in _REQUIRED:
        for event in (samples[Family.CONSENT][0], samples[Family.PLACEMENT][0]):
            key, headers, value = encode(event)
            current = dict(headers)[name]
            for other in [current, *_other_valid(name, event, samples)[:2]]:
                for repeated in ([(name, other), *headers], [*headers, (name, other)]):
                    for outcome in (_runtime(key, repeated, value, False), _whole(key, repeated, value)):
                        verdict, reason = _judged(outcome)
                        assert verdict == "refused" and reason.startswith(f"header {name}: repeated"), name


# --- the fuzz is not vacuous: a quick path loosened on purpose is caught ------------------------------


def _diverges(case: tuple[Event, Record], keep: bool = False) -> bool:
    _, (key, headers, value) = case
    return _judged(_runtime(key, headers, value, keep)) != _judged(_whole(key, headers, value))


_FIND = settings(max_examples=3000, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


def test_the_header_fuzz_finds_a_quick_path_that_takes_any_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from contracts import envelope

    monkeypatch.setattr(envelope, "_SOURCE", lambda raw: raw)  # "matches" whatever it is given
    monkeypatch.setattr(envelope, "_SOURCES", {})
    hypothesis.find(_hostile_headers(), _diverges, settings=_FIND)


def test_the_value_fuzz_finds_a_quick_path_without_the_derived_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from contracts import envelope

    loose = {raw: (*kept[:3], lambda data: None, kept[4]) for raw, kept in envelope._CANONICAL_TYPES.items()}
    monkeypatch.setattr(envelope, "_CANONICAL_TYPES", loose)
    hypothesis.find(_hostile_values(), _diverges, settings=_FIND)


def test_the_value_fuzz_finds_a_quick_path_that_reads_what_orjson_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exact struct refuses what orjson's parse refuses (NaN, 1e400, bytes not UTF-8 in a field no
    contract reads); one that skipped unknown fields, as msgspec's decoder does by default, would not."""
    from contracts import envelope

    lax = {
        raw: (*kept[:4], msgspec.json.Decoder(kept[2]).decode)
        for raw, kept in envelope._CANONICAL_TYPES.items()
    }
    monkeypatch.setattr(envelope, "_CANONICAL_TYPES", lax)
    hypothesis.find(_hostile_values(), _diverges, settings=_FIND)
