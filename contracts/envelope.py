"""CloudEvents 1.0 envelope on the Kafka protocol binding, binary content mode.

The envelope's attributes travel as ``ce_*`` headers, the event data as the JSON value, and the
pseudonymous person key as the Kafka key (the binding's ``partitionkey``), so one person's events stay
in one partition and in order. Decoding turns any defect into a ``PoisonMessage`` whose ``reason`` says
which header or field broke which rule; the runtime dead-letters those.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec
import orjson
from pydantic import BaseModel, ValidationError

from contracts import wire
from contracts.events import (
    PERSONAL_BLOCKS,
    Consent,
    Erasure,
    Placement,
    PlacementPersonal,
    Referral,
    ReferralPersonal,
    Registration,
    RegistrationPersonal,
    Retention,
)
from contracts.types import (
    DIGITS_AS_ZERO,
    INSTANT_RULE,
    INSTANT_SHAPES,
    in_supported_range,
    instant_text,
)
from domain.calendar import FIRST_YEAR, LAST_YEAR
from domain.trace_context import TRACEPARENT_HEADER as TRACEPARENT_HEADER
from domain.trace_context import TRACEPARENT_LENGTH as TRACEPARENT_LENGTH
from domain.trace_context import TRACEPARENT_PATTERN as TRACEPARENT_PATTERN
from domain.trace_context import TRACESTATE_HEADER as TRACESTATE_HEADER
from domain.trace_context import TRACESTATE_PATTERN as TRACESTATE_PATTERN
from domain.trace_context import traceparent_refusal as traceparent_refusal
from domain.trace_context import tracestate_refusal as tracestate_refusal

SPECVERSION = "1.0"
TYPE_PREFIX = "jp.ittai"
CONTENT_TYPE = "application/json"

Headers = Sequence[tuple[str, bytes]]


class Family(StrEnum):
    REGISTRATION = "registration"
    CONSENT = "consent"
    REFERRAL = "referral"
    PLACEMENT = "placement"
    RETENTION = "retention"
    # Not a client's family: the hub's operator side publishes it when a person is erased (no adapter
    # takes it; consumers accept it only from ``OPERATOR_SOURCE``).
    ERASURE = "erasure"


MODELS: dict[Family, type[BaseModel]] = {
    Family.REGISTRATION: Registration,
    Family.CONSENT: Consent,
    Family.REFERRAL: Referral,
    Family.PLACEMENT: Placement,
    Family.RETENTION: Retention,
    Family.ERASURE: Erasure,
}
# What a family's sealed ``personal`` block holds once opened (the adapters take it in clear; consumers
# that open a block check it against the same model).
PERSONAL_MODELS: dict[Family, type[BaseModel]] = {
    Family.REGISTRATION: RegistrationPersonal,
    Family.REFERRAL: ReferralPersonal,
    Family.PLACEMENT: PlacementPersonal,
}
assert set(PERSONAL_MODELS.values()) == set(PERSONAL_BLOCKS), "a personal block missing from PERSONAL_BLOCKS"
MAJOR_VERSION = 1
DEFAULT_NAMESPACE = "ittai"


def event_type(family: Family, major: int = MAJOR_VERSION) -> str:
    return f"{TYPE_PREFIX}.{family.value}.v{major}"


def topic_for(family: Family, namespace: str = DEFAULT_NAMESPACE) -> str:
    """``<namespace>.<family>.v1``; the namespace is ``ittai`` except in isolated test runs."""
    return f"{namespace}.{family.value}.v{MAJOR_VERSION}"


def deadletter_topic(namespace: str = DEFAULT_NAMESPACE) -> str:
    return f"{namespace}.deadletter.v1"


def feed_topic(namespace: str = DEFAULT_NAMESPACE) -> str:
    return f"{namespace}.feed.v1"


TYPES: dict[str, Family] = {event_type(f): f for f in Family}
TOPICS: dict[Family, str] = {f: topic_for(f) for f in Family}
DEADLETTER_TOPIC = deadletter_topic()
FEED_TOPIC = feed_topic()

D = TypeVar("D")


class Event(NamedTuple, Generic[D]):
    """One decoded event: the envelope's attributes plus its validated data (the pydantic model, or the
    ``contracts.wire`` struct mirroring it where a consumer decoded it). Immutable; a named tuple
    because a consumer builds one per record (a frozen dataclass costs twice as much to build)."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    family: Family
    data: D
    # The CloudEvents distributed-tracing extension: the W3C trace context of the request that accepted
    # the event (``ce_traceparent`` in binary mode), or None for an untraced event; and the W3C
    # ``tracestate`` that goes with it (``ce_tracestate``: vendors' entries), only ever beside a traceparent.
    traceparent: str | None = None
    tracestate: str | None = None
    # Where decoded from a record for a consumer that takes the data as plain values (``decode``'s
    # ``keep_parsed``): the data as ``orjson`` parsed it (dates as text, the personal block sealed), the
    # decoder's one parse of the value, so the record is not parsed again. Else None (``encode`` ignores it).
    parsed: Any = None


class PoisonMessage(Exception):
    """A message that can never be processed as it is; ``reason`` is safe to show operators."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_event_id() -> str:
    """128 random bits as 32 hex digits: what ``uuid.uuid4().hex`` gives less its six fixed version bits,
    at a sixth of the cost (building the UUID object was 13% of preparing a CSV row)."""
    return os.urandom(16).hex()


def encode(event: Event) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    """Return (key, headers, value) for the Kafka binary content mode."""
    headers = [(name, text.encode()) for name, text in header_texts(event).items()]
    return event.subject.encode(), headers, data_value(event)


def header_texts(event: Event) -> dict[str, str]:
    """The envelope's headers as text, in the order ``encode`` writes them (the outbox stores them so)."""
    headers = {
        "ce_specversion": SPECVERSION,
        "ce_id": event.id,
        "ce_source": event.source,
        "ce_type": event.type,
        "ce_subject": event.subject,
        "ce_time": event.time.isoformat(),
        "content-type": CONTENT_TYPE,
    }
    if event.traceparent is not None:
        headers[TRACEPARENT_HEADER] = event.traceparent
        if event.tracestate:  # W3C: a tracestate means nothing without its traceparent
            headers[TRACESTATE_HEADER] = event.tracestate
    return headers


def data_value(event: Event) -> bytes:
    """The event's data as the record's JSON value."""
    data = event.data
    # A batch file's events hold the ``contracts.wire`` struct (no model per row): the same JSON as the
    # model's, by msgspec. (Tested first: a struct is told from a model without the abc machinery.)
    if isinstance(data, msgspec.Struct):
        return _encode_json(wire.builtins_of(data))
    # Serialised by pydantic's core in one pass: the same bytes as orjson over ``model_dump(mode="json")``
    # (checked over the simulator's stream) at about half the cost.
    value: bytes = data.model_dump_json(exclude_none=True).encode()
    return value


_encode_json = msgspec.json.Encoder().encode

_REQUIRED = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time")
_READ = frozenset({*_REQUIRED, "content-type"})


def summarize_validation_error(exc: ValidationError) -> str:
    """One line per error: ``field: rule``. Never the value: a dead-letter reason is shown to operators,
    and a rogue producer may have typed anything anywhere (a name, a birth date, a phone number); the
    rules' texts name no value either (``infra.codecs.field_errors``)."""
    parts = []
    for err in exc.errors(include_url=False, include_context=False):
        value, msg = err.get("input"), err["msg"]
        if isinstance(value, str) and len(value) >= 3 and value in msg:  # e.g. a union tag repeated
            msg = err["type"]
        parts.append(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {msg}")
    return "; ".join(parts)


_HEADER_MAX = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The hub's own shapes: an id is 32 hex (``new_event_id``); a source is an authority, an office, the
# national Hello Work system or the hub's operator side (erasures only, ``domain.provenance``). Anything
# else is not an event of this hub (and may be a name).
ID_PATTERN = r"^[0-9a-f]{32}$"
SOURCE_PATTERN = r"^/(authorities/[0-9]{6}|hellowork/offices/[0-9]{4}|hellowork/national|hub/operator)$"
_SHAPES = {"ce_id": re.compile(ID_PATTERN), "ce_source": re.compile(SOURCE_PATTERN)}


# Headers whose values repeat across a stream (one spec version, five types, a few hundred sources):
# a value that passed once is not checked again. Bounded; never holds ids, subjects or times.
_REPEATING = frozenset({"ce_specversion", "ce_type", "ce_source", "content-type"})
_PASSED: dict[tuple[str, bytes], str] = {}
_PASSED_MAX = 4096


def _attributes(headers: Headers, traced: list[bytes], states: list[bytes]) -> dict[str, str]:
    """The envelope's headers as text. Only the names the binding defines are read, and no value ever
    goes into a reason: a rogue producer may have put a person's name in any header. ``ce_traceparent``
    and ``ce_tracestate`` values are put in ``traced`` and ``states`` as they are (optional:
    ``_trace_context`` and ``_trace_state`` judge them)."""
    attrs: dict[str, str] = {}
    passed = _PASSED
    for name, raw in headers:
        if name not in _READ:
            if name == TRACEPARENT_HEADER:
                traced.append(raw)
            elif name == TRACESTATE_HEADER:
                states.append(raw)
            continue
        # One value an attribute: of two, a reader taking the first and one taking the last (the console's
        # ``dlq_header``, many Kafka tools) would each see another event, source or person.
        if name in attrs:
            raise PoisonMessage(f"header {name}: repeated (a CloudEvents attribute has one value)")
        known = passed.get((name, raw)) if type(raw) is bytes else None
        if known is not None:
            attrs[name] = known
            continue
        try:
            value = raw.decode()
        except (UnicodeDecodeError, AttributeError):
            raise PoisonMessage(f"header {name}: not UTF-8") from None
        if len(value) > _HEADER_MAX:
            raise PoisonMessage(f"header {name}: longer than {_HEADER_MAX} characters")
        if _CONTROL.search(value):
            raise PoisonMessage(f"header {name}: contains a control character")
        shape = _SHAPES.get(name)
        if shape is not None and not shape.match(value):
            raise PoisonMessage(f"header {name}: does not match {shape.pattern}")
        attrs[name] = value
        if name in _REPEATING and type(raw) is bytes:
            if len(passed) >= _PASSED_MAX:
                passed.clear()
            passed[(name, raw)] = value
    for name in _REQUIRED:
        if name not in attrs:
            raise PoisonMessage(f"header {name}: missing (CloudEvents binary mode requires it)")
    return attrs


# The trace context is optional metadata, not part of the event: a defective one is dropped (the event is
# processed untraced; ``decode(dropped=…)`` says why, for the log), never a reason to refuse the event.
# Its rule (strict W3C, version 00) is pure and lives in ``domain.trace_context``, which the operators'
# header masking (``domain.monitoring``) shares.


def traceparent_of(headers: Headers) -> tuple[str | None, str | None]:
    """(the record's trace context, None) — or (None, why it was dropped) where a ``ce_traceparent``
    header is there but unusable; (None, None) for an untraced record."""
    return _trace_context([raw for name, raw in headers if name == TRACEPARENT_HEADER])


def _trace_context(found: list[bytes]) -> tuple[str | None, str | None]:
    if not found:
        return None, None
    if len(found) > 1:
        return None, f"header {TRACEPARENT_HEADER}: repeated (W3C: more than one makes it invalid)"
    raw = found[0]
    if not isinstance(raw, bytes):
        return None, f"header {TRACEPARENT_HEADER}: empty"
    refusal = traceparent_refusal(raw)
    if refusal is not None:
        return None, f"header {TRACEPARENT_HEADER}: {refusal}"
    return raw.decode("ascii"), None


def _trace_state(found: list[bytes], traceparent: str | None) -> tuple[str | None, str | None]:
    """(the record's tracestate, None), or (None, why it was dropped); (None, None) where none is there."""
    if not found:
        return None, None
    if traceparent is None:  # W3C: without a valid traceparent, the tracestate is not even parsed
        return None, f"header {TRACESTATE_HEADER}: without a well-formed {TRACEPARENT_HEADER} (W3C: ignored)"
    if len(found) > 1:
        return None, f"header {TRACESTATE_HEADER}: repeated (the binding carries one list)"
    raw = found[0]
    if not isinstance(raw, bytes):
        return None, None
    refusal = tracestate_refusal(raw)
    if refusal is not None:
        return None, f"header {TRACESTATE_HEADER}: {refusal}"
    text = raw.decode("ascii")
    return (text if text.strip(" \t,") else None), None  # no members: as if there were no tracestate


def decode(
    key: bytes | None,
    headers: Headers,
    value: bytes | None,
    *,
    fast: bool = False,
    dropped: list[str] | None = None,
    keep_parsed: bool = False,
) -> Event:
    """Decode one Kafka record or raise ``PoisonMessage`` naming the header or field and the rule.

    ``fast`` (consumers): the data is the ``contracts.wire`` struct, read by its fast decoder; where that
    refuses, the contract gives the verdict — so the same records are accepted, with the same reasons.
    ``dropped``: where a malformed ``ce_traceparent`` or ``ce_tracestate`` is dropped from an event, its
    reason is added here. ``keep_parsed``: the event keeps the value as parsed (``Event.parsed``), for a
    consumer that takes the data as plain values (kept only then: a batch of parses held until it commits
    costs a consumer that stores the bytes more than it saves).
    """
    if fast:
        event = decode_canonical(key, headers, value, dropped, keep_parsed)
        if event is not None:
            return event
    traced: list[bytes] = []
    states: list[bytes] = []
    attrs = _attributes(headers, traced, states)
    if attrs["ce_specversion"] != SPECVERSION:
        raise PoisonMessage(f"header ce_specversion: unsupported value, expected '{SPECVERSION}'")
    family = TYPES.get(attrs["ce_type"])
    if family is None:
        raise PoisonMessage(
            f"header ce_type: not a known type and version; known: {', '.join(sorted(TYPES))}"
        )
    # One spelling, as every instant of the contracts (``contracts.types.INSTANT_PATTERN``): RFC 3339 with
    # seconds and an offset. ``fromisoformat`` alone reads a dozen ISO 8601 spellings (no seconds, week dates,
    # a space, a comma, +0900, a naive time).
    if not instant_text(attrs["ce_time"]):
        raise PoisonMessage("header ce_time: not an RFC 3339 time with seconds and an offset (Z or ±HH:MM)")
    try:
        time = datetime.fromisoformat(attrs["ce_time"])
    except ValueError:  # a day or hour past its range (2026-02-30, 25:00)
        raise PoisonMessage("header ce_time: not an RFC 3339 time (no such day or hour)") from None
    if not in_supported_range(time):  # as every Timestamp: turning it to UTC cannot overflow downstream
        raise PoisonMessage(f"header ce_time: {INSTANT_RULE}")
    if value is None:
        raise PoisonMessage("value: empty (tombstone) where an event was expected")
    try:  # pydantic reads NaN, Infinity and 1e400 (as inf) where orjson, which consumers parse with, does not
        parsed = _loads(value)
    except orjson.JSONDecodeError:
        parsed = _UNREADABLE  # refused below, once the contract has given its own reason if it has one
    data: Any = None
    if fast and parsed is not _UNREADABLE and wire.shallow_enough(value):
        try:
            data = wire.DATA[family.value].read(parsed)
        except wire.Invalid:
            data = None
    if data is None:
        data = _validated(family, value)
        if fast:
            try:
                data = wire.from_model(data)
            except wire.Invalid:  # the mirror is tested equal to the contract; never a stopped consumer
                raise PoisonMessage(f"{family.value} data: not readable by contracts.wire") from None
    if parsed is _UNREADABLE:
        raise PoisonMessage("value: not valid JSON")
    subject = attrs["ce_subject"]
    if subject != data.person_key:
        raise PoisonMessage("header ce_subject: does not match data.person_key")
    # Keyed by the person, so a person's events share a partition (their order; the one member of a
    # group that sees them all): a writer leaving the key out chose the partition itself.
    if key is None:
        raise PoisonMessage("key: missing (partition key must be the person key)")
    if key.decode(errors="replace") != subject:
        raise PoisonMessage("key: does not match ce_subject (partition key must be the person key)")
    traceparent = tracestate = None
    if traced:
        traceparent, why = _trace_context(traced)
        if why is not None and dropped is not None:
            dropped.append(why)
    if states:
        tracestate, why = _trace_state(states, traceparent)
        if why is not None and dropped is not None:
            dropped.append(why)
    return Event(
        id=attrs["ce_id"],
        source=attrs["ce_source"],
        type=attrs["ce_type"],
        subject=subject,
        time=time,
        family=family,
        data=data,
        traceparent=traceparent,
        tracestate=tracestate,
        parsed=parsed if keep_parsed else None,
    )


_UNREADABLE = object()  # a value orjson does not read


# The hub's own records, as ``encode`` writes them, recognised in a few C calls: the headers in
# ``encode``'s order, the repeating ones by their exact bytes, the id by its length and alphabet, the time
# by what the whole way itself checks (printable ASCII that ``fromisoformat`` reads, with an offset). Anything
# else (another order, a repeated or unknown header, a non-ASCII time, a value the fast data decoder
# refuses) goes the whole way above, which alone gives reasons, so the verdict is the same.
_CANONICAL_TYPES = {
    t.encode(): (
        t,
        family,
        wire.DATA[family.value].struct,
        wire.DATA[family.value].checks,
        wire.DATA[family.value].exact,
    )
    for t, family in TYPES.items()
}
_TRACED_NAMES = ((), (TRACEPARENT_HEADER,), (TRACEPARENT_HEADER, TRACESTATE_HEADER))
_SPECVERSION = SPECVERSION.encode()
_CONTENT_TYPE = CONTENT_TYPE.encode()
_HEX = wire.changing_all_but(b"0123456789abcdef")  # ID_PATTERN's: 32 bytes it keeps as they are match
_SOURCE = re.compile(SOURCE_PATTERN[1:-1].encode()).fullmatch
_SOURCES: dict[bytes, str] = {}  # sources that passed (a few hundred organisations), bounded like _PASSED
_new_event = tuple.__new__  # ``Event(...)`` less its Python frame: the fields are given in order
_NESTING_MAX = wire.NESTING_MAX
_SHALLOW_LENGTH = 2 * wire.NESTING_MAX + 1
_loads = orjson.loads
_convert = msgspec.convert
_utf8 = wire.utf8


def decode_canonical(
    key: bytes | None, headers: Headers, value: bytes | None, dropped: list[str] | None, keep: bool
) -> Event | None:
    """``decode(fast=True)``'s first try, for a caller that decodes every record of a stream (the consumer
    runtime: a frame and five keywords less per record): the event, if the record is in the form ``encode``
    gives and everything in it is valid; else None, and ``decode`` gives the verdict, with reasons. Never
    accepts what the whole way refuses."""
    try:
        if len(headers) == 7:  # untraced: a starred target costs a list per record (~1.3k instructions)
            traced: Sequence[tuple[str, bytes]] = ()
            (
                (n0, spec),
                (n1, raw_id),
                (n2, raw_source),
                (n3, raw_type),
                (n4, raw_subject),
                (n5, raw_time),
                (n6, content),
            ) = headers
        else:
            (
                (n0, spec),
                (n1, raw_id),
                (n2, raw_source),
                (n3, raw_type),
                (n4, raw_subject),
                (n5, raw_time),
                (n6, content),
                *traced,
            ) = headers
        # ``encode``'s names in its order, one by one: each a compare of two texts the interpreter does
        # inline, where comparing a tuple of them built for it took a call per name
        if not (
            n0 == "ce_specversion"
            and n1 == "ce_id"
            and n2 == "ce_source"
            and n3 == "ce_type"
            and n4 == "ce_subject"
            and n5 == "ce_time"
            and n6 == "content-type"
            and spec == _SPECVERSION
            and content == _CONTENT_TYPE
        ):
            return None
        if traced and tuple(name for name, _ in traced) not in _TRACED_NAMES:
            return None
        type_, family, struct, checks, exact = _CANONICAL_TYPES[raw_type]
        source = _SOURCES.get(raw_source)
        if source is None:
            if _SOURCE(raw_source) is None:
                return None
            if len(_SOURCES) >= _PASSED_MAX:
                _SOURCES.clear()
            source = _SOURCES[raw_source] = raw_source.decode()
        if len(raw_id) != 32 or raw_id.translate(_HEX) != raw_id or raw_subject != key or value is None:
            return None
        # The whole way refuses a time in any other spelling (``instant_text``), or that fromisoformat does
        # not read. The spelling told from the bytes (``contracts.types.instant_bytes``, inlined: as the
        # range's quick test below), so the text is ASCII.
        offset = INSTANT_SHAPES.get(raw_time.translate(DIGITS_AS_ZERO))
        if offset is None or (offset and (raw_time[-5:-3] > b"23" or raw_time[-2] > 0x35)):
            return None
        time = datetime.fromisoformat(raw_time.decode("ascii"))
        if not (
            type(time.tzinfo) is timezone and FIRST_YEAR < time.year < LAST_YEAR
        ) and not in_supported_range(time):
            return None
        # As ``wire.DATA[…].decode``: straight into the exact struct where no parse is kept and the value is
        # UTF-8, else (or where that refuses) orjson's parse (the one parse, ``Event.parsed``; it refuses a
        # number past a float's range) converted; its refusals are the ValueErrors etc. caught below.
        data: Any = None
        parsed: Any = None
        if not keep and (value.isascii() or _utf8(value)):
            try:
                data = exact(value)
            except ValueError:  # msgspec.DecodeError
                data = None
        if data is None:
            # may be nested deeper than the contract reads (``wire.shallow_enough``, inlined). Not asked of
            # a value the exact struct read: it reads no deeper than its own fields' types.
            if len(value) > _SHALLOW_LENGTH and value.count(b"[") + value.count(b"{") > _NESTING_MAX:
                return None
            parsed = _loads(value)
            data = _convert(parsed, struct)
        checks(data)
        subject = raw_subject.decode()
        if subject != data.person_key:
            return None
    except (KeyError, TypeError, ValueError, AttributeError):  # wire.Invalid, UnicodeError, JSONDecodeError
        return None
    traceparent = tracestate = None
    if traced:
        traceparent, why = _trace_context([traced[0][1]])
        if why is not None and dropped is not None:
            dropped.append(why)
        if len(traced) > 1:
            tracestate, why = _trace_state([traced[1][1]], traceparent)
            if why is not None and dropped is not None:
                dropped.append(why)
    kept = parsed if keep else None
    return _new_event(
        Event, (raw_id.decode(), source, type_, subject, time, family, data, traceparent, tracestate, kept)
    )


def _validated(family: Family, value: bytes) -> BaseModel:
    """The data as the contract reads it, or ``PoisonMessage`` saying why not."""
    try:
        return MODELS[family].model_validate_json(value)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise PoisonMessage("value: not valid JSON") from None
        raise PoisonMessage(f"{family.value} data invalid: {summarize_validation_error(exc)}") from None
