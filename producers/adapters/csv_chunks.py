"""A batch file's rows, judged and built a chunk at a time without a pydantic model per row; and an HTTP
request's bodies, judged and built the same way (``FamilyRows.judge_body``).

The cells of a chunk are converted column by column (``infra.codecs.csv_rows.parse_chunk``); each row's
values are then judged by the contract's own rules as ``contracts.wire`` derives them for msgspec (the
same structs and checks the consumers decode with): the public fields against the family's contract, the
personal block against its personal contract. A row both accept is built from those structs: its sealed
block, its event data and the fields authorisation reads, with no second validation.

The structs are at least as strict as the contract, never looser. Where they refuse a row, the row goes
to the contract itself (``producers.submission.check``, the pydantic model the HTTP path validates with),
which says why, naming field and rule; so every refusal, and its reason, is the contract's. If the
contract accepts a spelling the structs refused, the row is built from the contract's canonical form.
``tests/unit/test_csv_chunks.py`` holds the two equal over ``hypothesis``-made rows: same verdict, same
reasons, same events; ``tests/unit/test_body_judge.py`` over ``hypothesis``-made request bodies (any JSON,
fields the contract does not know at any depth: the structs ignore those, so such a body goes to the
contract, which refuses it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, get_args

import msgspec
import orjson
from pydantic import BaseModel

from contracts import wire
from contracts.envelope import MODELS, PERSONAL_MODELS, Event, Family, event_type, header_texts
from contracts.events import Sealed
from infra.codecs.field_errors import FieldError
from infra.crypto import seal_plaintexts
from producers.adapters.authorization import authorised_fields
from producers.submission import Checked, check

_SEALED, _ = wire.checked_struct(Sealed)
# A block of the sealed shape, standing in for ``personal`` while the public fields are judged: the
# personal block is judged by its own contract, and sealed once the row is authorised. Made once, as the
# struct itself: ``msgspec.convert`` takes it as it is, and the checks pass over it, that object alone
# (``wire.checked_struct``'s ``standing_in``), where they checked the same constant block on every row.
_PLACEHOLDER = {"alg": "A256GCM", "kid": "pdk-" + "0" * 32 + "-1", "nonce": "A" * 16, "ct": "A" * 22}
_STAND_IN = _SEALED(**_PLACEHOLDER)


class Row(NamedTuple):
    """A row both contracts accept: its public data (``personal`` still the placeholder), its personal
    block as the JSON to seal (``None`` if it has none), and the fields authorisation reads. (A named
    tuple: one is made per row.)"""

    line: int
    data: Any  # the contract's struct
    personal: bytes | None
    key: str  # the row's idempotency key (same content, same key)
    view: Mapping[str, Any]
    subject: str


@dataclass(slots=True)
class Judged:
    rows: list[Row] = field(default_factory=list)
    bad: list[tuple[int, FieldError]] = field(default_factory=list)


class FamilyRows:
    """One family's judge of parsed rows (``data`` dicts with the personal block in clear)."""

    def __init__(self, family: Family) -> None:
        self.family = family
        model = MODELS[family]
        stand_in = {"personal": _STAND_IN} if "personal" in model.model_fields else None
        self.struct, self.checks = wire.checked_struct(model, standing_in=stand_in)
        personal = PERSONAL_MODELS.get(family)
        self.personal: tuple[type[msgspec.Struct], Callable[[Any], None] | None] | None = (
            wire.checked_struct(personal) if personal is not None else None
        )
        self.personal_json = _json_of(personal) if personal is not None else None
        data_json = _json_of(model)
        # An event's value, as ``contracts.envelope.data_value`` writes it for a struct (for the outbox).
        self.value_of: Callable[[Event], bytes] = lambda event: data_json(event.data)
        self.personal_required = (
            "personal" in model.model_fields and model.model_fields["personal"].is_required()
        )
        self.known = _fields_of(model, personal=_fields_of(personal)) if personal else _fields_of(model)

    def fast(self, data: dict[str, Any]) -> tuple[Any, bytes | None] | None:
        """The row's struct and its personal block's JSON, or ``None`` where a rule may refuse it."""
        clear = data.get("personal")
        try:
            if self.personal is None:
                public, block = data, None
            elif clear is None:
                if self.personal_required:
                    return None
                public, block = data, None
            else:
                public = {**data, "personal": _STAND_IN}
                struct, checks = self.personal
                opened = msgspec.convert(clear, struct)
                if checks is not None:
                    checks(opened)
                assert self.personal_json is not None
                block = self.personal_json(opened)
            value = msgspec.convert(public, self.struct)
            if self.checks is not None:
                self.checks(value)
        except (msgspec.ValidationError, ValueError, TypeError, AttributeError):
            return None
        return value, block

    def judge_body(self, data: Any, prefix: tuple[int | str, ...] = ()) -> Row | list[FieldError]:
        """One request body (the HTTP path), judged as ``judge`` judges a row: accepted and built, or the
        contract's refusal with its field paths under ``prefix`` (a batch's index). A body is any JSON,
        not cells of known columns: the structs ignore a field they do not know (as every reader of the
        contract does), so a body with one, at any depth, is judged by the contract alone."""
        if isinstance(data, dict) and not _unknown_field(data, self.known):
            built = self.fast(data)
            if built is not None:
                return _row(0, built, "")
        result = check(self.family, data, prefix)
        return result if isinstance(result, list) else _row(0, self._from_checked(result), "")

    def judge(
        self,
        rows: Sequence[tuple[int, dict[str, Any], str]],
        label: Callable[[str], str | None],
    ) -> Judged:
        """Rows (line, data, row key) judged: accepted rows built, refused ones with the contract's reasons."""
        judged = Judged()
        fast = self.fast
        for line, data, key in rows:
            built = fast(data)
            if built is None:
                result = check(self.family, data)
                if isinstance(result, list):
                    judged.bad.extend((line, _labelled(e, label)) for e in result)
                    continue
                built = self._from_checked(result)
            judged.rows.append(_row(line, built, key))
        return judged

    def _from_checked(self, checked: Checked) -> tuple[Any, bytes | None]:
        """A row the contract accepted in a spelling the structs refuse, read from its canonical form."""
        canonical = checked.data.model_dump(mode="json")
        built = self.fast(canonical)
        if built is None:  # the structs refuse what the contract accepts: a bug in their derivation
            raise AssertionError(f"contracts.wire refuses a {self.family.value} the contract accepts")
        return built


def _json_of(model: type[BaseModel]) -> Callable[[Any], bytes]:
    """The JSON of ``model``'s struct as ``msgspec.json.encode(wire.builtins_of(value))`` writes it, at a
    third of the cost: the struct's own JSON (msgspec, in C) less the nulls of the fields that default to
    None (``builtins_of`` leaves them out, as ``exclude_none`` does). A ``,"field":null`` is found only
    as JSON, never inside a text: a text's quotes are escaped (``\\"``). So the model's first field must
    not be one (it has no comma before it), and the models it holds must have no such field, nor one of
    those names: otherwise the builtins are written."""
    optional = _default_none(model)
    held = _held_models(model)
    if not optional:
        plain = not any(_default_none(m) for m in held)
        return _encode_json if plain else lambda value: _encode_json(wire.builtins_of(value))
    if next(iter(model.model_fields)) in optional or any(
        _default_none(m) or set(m.model_fields) & set(optional) for m in held
    ):
        return lambda value: _encode_json(wire.builtins_of(value))  # its nulls cannot be told apart
    nulls = [b',"' + n.encode() + b'":null' for n in optional]

    def encoded(value: Any) -> bytes:
        written = _encode_json(value)
        for null in nulls:  # bytes.replace: a C search, quicker than one regular expression of them all
            written = written.replace(null, b"")
        return written

    return encoded


def _default_none(model: type[BaseModel]) -> list[str]:
    return [n for n, info in model.model_fields.items() if not info.is_required() and info.default is None]


def _held_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The models ``model``'s fields hold (alone, in a list or optional), at any depth."""
    held: list[type[BaseModel]] = []
    for info in model.model_fields.values():
        for inner in _models_in(info.annotation):
            held += [inner, *_held_models(inner)]
    return held


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for inner in get_args(annotation) for m in _models_in(inner)]


_encode_json = msgspec.json.Encoder().encode


def _row(line: int, built: tuple[Any, bytes | None], key: str) -> Row:
    value, block = built
    return Row(line, value, block, key, authorised_fields(value), value.person_key)


class _Fields(NamedTuple):
    """A model's field names, and those of its fields that hold models (alone, in a list or optional)
    with their own."""

    names: frozenset[str]
    nested: tuple[tuple[str, _Fields], ...]


def _fields_of(model: type[BaseModel], **replaced: _Fields) -> _Fields:
    nested = {name: _held_model(info.annotation) for name, info in model.model_fields.items()}
    nested |= replaced
    return _Fields(frozenset(model.model_fields), tuple((n, f) for n, f in nested.items() if f is not None))


def _held_model(annotation: Any) -> _Fields | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _fields_of(annotation)
    for inner in get_args(annotation):  # X | None, list[X], Annotated[X, ...]
        held = _held_model(inner)
        if held is not None:
            return held
    return None


def _unknown_field(data: dict[str, Any], fields: _Fields) -> bool:
    """Whether ``data`` has a field the contract does not know, at any depth."""
    if not fields.names.issuperset(data):
        return True
    for name, inner in fields.nested:
        value = data.get(name)
        if isinstance(value, dict):
            if _unknown_field(value, inner):
                return True
        elif isinstance(value, list) and any(isinstance(v, dict) and _unknown_field(v, inner) for v in value):
            return True
    return False


def _labelled(error: FieldError, label: Callable[[str], str | None]) -> FieldError:
    return FieldError(error.field, error.rule, error.value, error.rule_class, label(error.field))


def seal_rows(
    family: Family, rows: Sequence[Row], sources: Sequence[str], keys: Mapping[str, bytes]
) -> list[Event]:
    """The events of authorised rows: each personal block sealed with its person's data key (``keys``),
    ids and nonces drawn in one call each, one acceptance time for the chunk."""
    now = datetime.now(UTC)
    ids = os.urandom(16 * len(rows)).hex()
    sealed = iter(
        seal_plaintexts([(keys[r.subject], r.subject, r.personal) for r in rows if r.personal is not None])
    )
    kind = event_type(family)
    replace = msgspec.structs.replace
    events: list[Event] = []
    for i, (row, source) in enumerate(zip(rows, sources, strict=True)):
        data = row.data
        if row.personal is not None:
            kid, nonce, ct = next(sealed)
            data = replace(data, personal=_SEALED(alg="A256GCM", kid=kid, nonce=nonce, ct=ct))
        events.append(Event(ids[32 * i : 32 * i + 32], source, kind, row.subject, now, family, data))
    return events


class HeadersJson:
    """A chunk's events' outbox headers as JSON text, ``orjson.dumps(header_texts(event))`` (the outbox's
    ``headers`` column, staged as text): the events of a chunk differ only in id and subject, so the JSON
    is written once for each source, type, time and trace context, as a template the two are put into.
    An id or subject that JSON would escape (never one the contract and ``seal_rows`` make: hexadecimal)
    is written whole; so is every event of a template its marks cannot be found in alone."""

    _ID, _SUBJECT = "\x00", "\x01"  # escaped by JSON as \u0000 and \u0001: nowhere else in a template

    def __init__(self) -> None:
        self._templates: dict[tuple[Any, ...], tuple[str, str, str] | None] = {}
        self._last: tuple[tuple[Any, ...], tuple[str, str, str] | None] | None = None

    def __call__(self, event: Event) -> str:
        key = (event.source, event.type, event.time, event.family, event.traceparent, event.tracestate)
        last = self._last
        if last is not None and last[0] == key:  # the previous event's (a tuple compare: no hash)
            template = last[1]
        else:
            if key in self._templates:
                template = self._templates[key]
            else:
                template = self._templates[key] = self._template(event)
            self._last = (key, template)
        ident, subject = event.id, event.subject
        if template is None or not (ident.isalnum() and subject.isalnum() and (ident + subject).isascii()):
            return orjson.dumps(header_texts(event)).decode()
        head, middle, tail = template
        return head + ident + middle + subject + tail

    def _template(self, event: Event) -> tuple[str, str, str] | None:
        text = orjson.dumps(header_texts(event._replace(id=self._ID, subject=self._SUBJECT))).decode()
        head, *rest = text.split("\\u0000")
        if len(rest) != 1:
            return None
        middle, *tail = rest[0].split("\\u0001")
        return (head, middle, tail[0]) if len(tail) == 1 else None
