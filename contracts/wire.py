"""The consume side's fast decoder: the six kinds of event data as ``msgspec`` structs.

Events were validated in full at the edge (pydantic, ``contracts.events``), so a consumer needs the same
verdict at a fraction of the cost: pydantic takes ~25 µs per event, a struct ~3 µs. The structs are not
written by hand; they are derived from the pydantic models when this module is imported — same fields,
defaults, enums, patterns, lengths and bounds, and the models' own ``after`` validators (field and model)
run on the struct — so tightening a contract tightens this decoder with it. A rule this derivation does
not know stops the import (``TypeError``) instead of being skipped.

The fast decoder is at least as strict as the contract, never looser: where it refuses, the caller asks
the contract itself (``contracts.envelope.decode``), which either accepts (e.g. a value with more brackets
than ``NESTING_MAX``, none nested too deep; the struct is then built from the model's canonical form) or
gives the dead-letter reason. (Dates and times take one spelling in both: ``contracts.types``.) So what is accepted, and every rejection's reason, is exactly the contract's;
``tests/unit/test_wire.py`` checks it over every JSON Schema example, the simulator's stream and
``hypothesis``-mutated records.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable, Mapping
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import annotated_types
import msgspec
import orjson
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, Strict, StringConstraints
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from contracts.events import (
    PERSONAL_BLOCKS,
    Consent,
    Erasure,
    Placement,
    Referral,
    Registration,
    Retention,
)
from contracts.types import (
    DAY_RANGES,
    DIGITS_AS_ZERO,
    INSTANT_SHAPES,
    SPELLING_CHECKS,
    in_supported_range,
    supported_instant,
)

__all__ = [
    "DATA",
    "NESTING_MAX",
    "Invalid",
    "changing_all_but",
    "from_model",
    "quick_check",
    "shallow_enough",
    "struct_for",
]

Invalid = msgspec.DecodeError  # msgspec.ValidationError is one

# pydantic's JSON parser (jiter) refuses a value nested more than 201 levels deep as ``json_invalid``;
# msgspec skips a field no struct reads but still parses it, one recursion per level, so it accepts deeper
# values and raises ``RecursionError`` past Python's limit. A value with more brackets than this (two
# counts in C) may be nested deeper than the contract reads: the fast paths leave it to the contract.
NESTING_MAX = 200


def _aware_time(value: str) -> datetime:
    # In the contract's one spelling (``contracts.types.INSTANT_PATTERN``: at most six fractional digits, so
    # both readers give the same instant), told from its bytes (``contracts.types.instant_bytes``, inlined).
    # A lone surrogate (a JSON escape) does not encode: a ValueError, a refusal as any other here.
    raw = value.encode()
    offset = INSTANT_SHAPES.get(raw.translate(DIGITS_AS_ZERO))
    if offset is None or (offset and (raw[-5:-3] > b"23" or raw[-2] > 0x35)):
        raise ValueError("not an aware RFC 3339 time")
    instant = datetime.fromisoformat(value)
    if not in_supported_range(instant):  # ``contracts.types.Timestamp``'s own validator, mirrored here
        raise ValueError("outside the supported range")
    return instant


class _Field(NamedTuple):
    name: str
    kind: Any  # msgspec type, with the rules msgspec checks in C (lengths, bounds)
    default: Any
    pattern: str | None  # checked in Python, as a whole-value match
    validators: list[Callable[[Any], Any]]  # after-validators of the field and of its type
    aware_time: bool  # an aware time: a str in the struct until checked, then a datetime
    text: bool  # a short str (or None): values that passed its validators are remembered
    optional: bool  # None is a value of the field (msgspec gives no None to the others)
    nested: Callable[[Any], None] | None  # the checks of a nested struct (or of each one in a list)


_STRUCTS: dict[type[BaseModel], tuple[type[msgspec.Struct], Callable[[Any], None] | None]] = {}
_MEMO_MAX = 8192
_MEMO_TEXT_MAX = 256  # the longest text whose passing values are remembered
# The blocks that hold personal data in clear (``contracts.envelope.PERSONAL_MODELS``): their checks keep no
# memo of values that passed, or a process judging them (the adapters) would keep names and 求職番号 in
# memory past the person's erasure.
_PERSONAL: frozenset[type[BaseModel]] = frozenset(PERSONAL_BLOCKS)


def _rules(metadata: list[Any]) -> tuple[dict[str, Any], str | None, list[Callable[[Any], Any]]]:
    """msgspec's rules, the pattern, and the after-validators of one field's pydantic metadata."""
    rules: dict[str, Any] = {}
    pattern: str | None = None
    after: list[Callable[[Any], Any]] = []
    for m in metadata:
        if isinstance(m, BeforeValidator) and m.func in SPELLING_CHECKS:
            continue  # a date's or time's one spelling: msgspec's ``date`` and ``to_time`` read only it
        if isinstance(m, AfterValidator):
            if len(inspect.signature(m.func).parameters) != 1:
                raise TypeError(f"wire: unsupported validator {m!r} (it takes more than the value)")
            after.append(m.func)  # type: ignore[arg-type]
            continue
        if isinstance(m, Strict) and m.strict:
            continue  # msgspec's int and bool take nothing else already (no bool, float or text)
        if isinstance(m, StringConstraints):
            if m.strip_whitespace or m.to_upper or m.to_lower or m.strict or m.ascii_only:
                raise TypeError(f"wire: unsupported string constraint {m!r}")
            items: dict[str, Any] = {
                "min_length": m.min_length,
                "max_length": m.max_length,
                "pattern": m.pattern,
            }
        elif isinstance(m, annotated_types.MinLen):
            items = {"min_length": m.min_length}
        elif isinstance(m, annotated_types.MaxLen):
            items = {"max_length": m.max_length}
        elif isinstance(m, annotated_types.Ge):
            items = {"ge": m.ge}
        elif isinstance(m, annotated_types.Le):
            items = {"le": m.le}
        elif isinstance(m, annotated_types.Gt):
            items = {"gt": m.gt}
        elif isinstance(m, annotated_types.Lt):
            items = {"lt": m.lt}
        elif type(m).__name__ == "_PydanticGeneralMetadata" and set(vars(m)) <= {"pattern"}:
            items = {"pattern": vars(m).get("pattern")}
        else:
            raise TypeError(f"wire: unsupported rule {m!r}")
        for key, value in items.items():
            if value is None:
                continue
            if key == "pattern":
                if pattern is not None and pattern != value:
                    raise TypeError("wire: two patterns on one field")
                pattern = value
            elif key in rules and rules[key] != value:
                raise TypeError(f"wire: two {key} rules on one field")
            else:
                rules[key] = value
    return rules, pattern, after


def _kind(
    annotation: Any, rules: dict[str, Any], exact: bool = False
) -> tuple[Any, Callable[[Any], None] | None]:
    """The msgspec type of a pydantic field annotation with ``rules`` on its value, and the checks of
    the struct (or list of structs) it holds; ``exact``: its structs are the exact ones (``_exact``)."""
    if rules:
        inner, nested = _kind(annotation, {}, exact)
        if get_origin(inner) in (Union, types.UnionType):  # an optional value: the rules bind the value
            (value,) = [a for a in get_args(inner) if a is not type(None)]
            return Annotated[value, msgspec.Meta(**rules)] | None, nested
        return Annotated[inner, msgspec.Meta(**rules)], nested
    if annotation in (str, int, bool, date):
        return annotation, None
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return annotation, None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        struct, checks = _STRUCTS.get(annotation) or _derive(annotation)
        return (_exact(annotation) if exact else struct), checks
    origin = get_origin(annotation)
    if origin is Literal:
        return annotation, None
    if origin is list:
        (item,) = get_args(annotation)
        if exact and item is int:
            raise TypeError("wire: a list of integers (no exact bound mirrors orjson for its items)")
        kind, each = _kind(item, {}, exact)
        if each is None:
            return list[kind], None  # type: ignore[valid-type]

        def every(values: list[Any], each: Callable[[Any], None] = each) -> None:
            for value in values:
                each(value)

        return list[kind], every  # type: ignore[valid-type]
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        if len(args) == 2 and type(None) in args:
            (inner,) = [a for a in args if a is not type(None)]
            kind, nested = _kind(inner, {}, exact)
            return kind | None, nested
    raise TypeError(f"wire: unsupported type {annotation!r}")


# orjson reads an integer in -2**63 .. 2**64-1 as an int and any other as a float (which no int field
# takes); msgspec reads any integer as an int. An exact struct's integers are held to what both read as an
# int and msgspec can bound (int64), so it never takes one the other way refuses.
_ORJSON_INTS = {"ge": -(2**63), "le": 2**63 - 1}


def _field(name: str, info: FieldInfo, validators: list[Callable[[Any], Any]], exact: bool = False) -> _Field:
    annotation = info.annotation
    metadata = list(info.metadata)
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
        # An optional constrained type (``JobSeekerNumber | None``): its rules bind the value when given.
        (inner,) = [a for a in get_args(annotation) if a is not type(None)]
        if get_origin(inner) is Annotated:
            base, *extra = get_args(inner)
            annotation = base | None
            for m in extra:
                metadata += m.metadata if isinstance(m, FieldInfo) else [m]
    rules, pattern, after = _rules(metadata)
    aware = annotation is AwareDatetime
    if aware:
        # ``to_time`` checks Timestamp's range itself (its validator would see the text, not the time)
        after = [a for a in after if a is not supported_instant]
        if rules or pattern or after or validators:
            raise TypeError(f"wire: rules on time field {name}")
        kind: Any = str
        nested = None
    else:
        if annotation is datetime:
            raise TypeError(f"wire: {name}: naive datetimes are not on the wire")
        if exact and annotation in (int, int | None):
            if "gt" in rules or "lt" in rules:
                raise TypeError(f"wire: {name}: an exclusive bound on an integer")
            rules = {
                "ge": max(rules.get("ge", _ORJSON_INTS["ge"]), _ORJSON_INTS["ge"]),
                "le": min(rules.get("le", _ORJSON_INTS["le"]), _ORJSON_INTS["le"]),
                **{k: v for k, v in rules.items() if k not in ("ge", "le")},
            }
        kind, nested = _kind(annotation, rules, exact)
    if info.default_factory is not None:
        raise TypeError(f"wire: {name}: default factories are not supported")
    default = msgspec.NODEFAULT if info.default is PydanticUndefined else info.default
    # A text that may be long is a payload (a ciphertext), unique to its event: its values are not
    # remembered (holding them would cost more than its checks). Codes and sites repeat and are short.
    text = annotation in (str, str | None) and rules.get("max_length", 0) <= _MEMO_TEXT_MAX
    optional = info.default is None or (
        get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)
    )
    return _Field(name, kind, default, pattern, [*after, *validators], aware, text, optional, nested)


def _after_validators(model: type[BaseModel]) -> tuple[dict[str, list[Any]], list[Any]]:
    decorators = model.__pydantic_decorators__
    if decorators.validators or decorators.root_validators:
        raise TypeError(f"wire: {model.__name__}: pydantic v1 validators are not supported")
    fields: dict[str, list[Any]] = {}
    for field_dec in decorators.field_validators.values():
        if field_dec.info.mode != "after" or len(inspect.signature(field_dec.func).parameters) != 1:
            raise TypeError(f"wire: {model.__name__}: only after-validators of the value are supported")
        for name in field_dec.info.fields:
            fields.setdefault(name, []).append(field_dec.func)
    models = []
    for model_dec in decorators.model_validators.values():
        if model_dec.info.mode != "after" or len(inspect.signature(model_dec.func).parameters) != 1:
            raise TypeError(f"wire: {model.__name__}: only after-validators of the model are supported")
        models.append(model_dec.func)
    return fields, models


# A pattern that is one ASCII character class repeated (``^[0-9a-f]{32}$``, ``^[A-Za-z0-9_-]+$``, ``^\d{4}$``)
# holds for text whose length fits and none of whose UTF-8 bytes is outside the class (a character outside
# ASCII is encoded as bytes outside any ASCII class): ``bytes.translate`` with a table that changes every
# byte outside the class (and only those) tells that in one C pass, a fraction of the regex engine's cost
# per value (given characters to delete instead, it builds a table of its own per call: twice the cost). One whose class excludes only
# characters that are not printable (``PRINTABLE_PATTERN``) holds for any text ``str.isprintable`` passes.
# Both are only sufficient conditions: a value they do not pass is judged by the regex itself.
# The patterns are not handed to msgspec (``msgspec.Meta(pattern=…)``): it runs Python's ``re.search`` on
# each value from C, measured (session 7) at ~500–600 ns a value against ~300–400 ns for the compiled
# ``fullmatch`` here and ~50–100 ns for a quick check; it would also need ``\A(?:…)\Z`` to refuse a final
# newline, as ``re.search`` lets ``$`` match before one.
_ONE_CLASS = re.compile(r"\^(?:\[([^\]\\^][^\]\\]*)\]|\\d)(?:\{(\d+)\}|\{(\d+),(\d+)\}|(\+)|(\*))\$")
_NOT_PRINTABLE_CLASS = re.compile(r"\^\[\^((?:\\x[0-9a-f]{2}(?:-\\x[0-9a-f]{2})?)+)\]\*\$")


def _members(body: str) -> str:
    """The characters of a character class's body: single characters and ``a-z`` ranges."""
    out, i = [], 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            out += [chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1)]
            i += 3
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def changing_all_but(members: bytes) -> bytes:
    """A ``bytes.translate`` table that keeps ``members`` and changes every other byte: the translation of
    a text equals it exactly where none of its bytes is outside ``members``."""
    return bytes(c if c in members else c ^ 1 for c in range(256))


def _quick_match(pattern: str, name: str) -> tuple[str, dict[str, Any]] | None:
    """An expression over ``v`` that is true only where ``pattern`` fully matches ``v`` (None where no cheap
    one is known), and the names it uses."""
    if (one := _ONE_CLASS.fullmatch(pattern)) is not None:
        body, exact, low, high, plus, _star = one.groups()
        members = _members(body) if body is not None else "0123456789"  # \d on ASCII text
        if not members.isascii():
            return None
        if exact is not None:
            length = f"len(v) == {int(exact)} and "
        elif low is not None:
            length = f"{int(low)} <= len(v) <= {int(high)} and "
        else:
            length = "v and " if plus else ""
        return f"{length}(w := v.encode()).translate({name}) == w", {name: changing_all_but(members.encode())}
    if (negated := _NOT_PRINTABLE_CLASS.fullmatch(pattern)) is not None:
        excluded = _members(negated.group(1).encode().decode("unicode_escape"))
        if not any(c.isprintable() for c in excluded):
            return "v.isprintable()", {}
    return None


def quick_check(pattern: str) -> Callable[[str], bool] | None:
    """The quick check the generated code runs before ``pattern``'s regex, as a function (None where it
    has none): ``tests/unit/test_wire.py`` holds it to passing only what the regex fully matches."""
    quick = _quick_match(pattern, "alphabet")
    if quick is None:
        return None
    expression, names = quick
    check: Callable[[str], bool] = eval(f"lambda v: bool({expression})", names)
    return check


def _compile_checks(
    model: type[BaseModel],
    fields: list[_Field],
    model_validators: list[Any],
    *,
    nested: bool,
    memo: bool,
    standing_in: Mapping[str, Any] | None = None,
) -> Callable[[Any], None] | None:
    """One straight-line function running a struct's checks — field by field as pydantic goes (inner
    models first), then the model's own validators — generated the way ``dataclasses`` generates
    ``__init__``: a loop over field descriptions costs more than msgspec's whole structural pass.

    A text value with validators of its own that passed once passes again (codes and sites recur across
    a stream); so does a small inner model with validators of its own (a recipient, an occupation).
    Values checked by a pattern alone are not remembered: most are unique (ids, keys, nonces,
    ciphertexts), and remembering one costs about what the pattern's quick check does. Nothing is
    remembered without ``memo`` (a block of personal data).
    """
    env: dict[str, Any] = {"set_field": msgspec.structs.force_setattr, "to_time": _aware_time}
    lines: list[str] = []
    for i, f in enumerate(fields):
        body: list[str] = []
        if f.aware_time:
            body.append(f"set_field(obj, {f.name!r}, to_time(v))")
        if f.pattern is not None:
            # The whole value must match: pydantic's Rust regex ends ``$`` at the end of the text, where
            # Python's ``re.search`` would let it match before a final newline. (``\d`` is Unicode in both.)
            env[f"match{i}"] = re.compile(f.pattern).fullmatch
            refusal = f"match{i}(v) is None"
            quick = _quick_match(f.pattern, f"alphabet{i}")
            if quick is not None:
                expression, names = quick
                env.update(names)
                refusal = f"not ({expression}) and {refusal}"
            body += [f"if {refusal}:", f"    raise ValueError('{f.name}: does not match its pattern')"]
        for j, validate in enumerate(f.validators):
            bounds = DAY_RANGES.get(validate)
            if bounds is not None:  # a day's range: compared here, not a call per day per event
                env[f"first{i}_{j}"], env[f"last{i}_{j}"] = bounds
                body += [
                    f"if not first{i}_{j} <= v <= last{i}_{j}:",
                    f"    raise ValueError('{f.name}: out of range')",
                ]
                continue
            env[f"validate{i}_{j}"] = validate
            # a validator that rewrites the value is not mirrored: refuse, and let the contract decide
            body += [f"if validate{i}_{j}(v) != v:", f"    raise ValueError('{f.name}: rewritten')"]
        if f.nested is not None:
            env[f"inner{i}"] = f.nested
            if standing_in and f.name in standing_in:  # that one object, by identity (``checked_struct``)
                env[f"stand_in{i}"] = standing_in[f.name]
                body += [f"if v is not stand_in{i}:", f"    inner{i}(v)"]
            else:
                body.append(f"inner{i}(v)")
        if not body:
            continue
        lines.append(f"v = obj.{f.name}")
        test = "v is not None" if f.optional else ""
        if memo and f.text and f.validators:
            env[f"seen{i}"] = set()
            test = f"{test} and v not in seen{i}" if test else f"v not in seen{i}"
            body += [f"if len(seen{i}) >= {_MEMO_MAX}:", f"    seen{i}.clear()", f"seen{i}.add(v)"]
        if test:
            lines.append(f"if {test}:")
            lines.extend(f"    {line}" for line in body)
        else:
            lines.extend(body)
    for i, validate in enumerate(model_validators):
        env[f"model{i}"] = validate
        lines.append(f"model{i}(obj)")
    if not lines:
        return None
    hashable = all(
        not f.aware_time and get_origin(model.model_fields[f.name].annotation) is not list for f in fields
    )
    if memo and nested and model_validators and hashable and not standing_in:
        env["passed"] = set()
        lines = ["if obj in passed:", "    return", *lines]
        lines += [f"if len(passed) < {_MEMO_MAX}:", "    passed.add(obj)"]
    source = f"def check_{model.__name__}(obj):\n" + "".join(f"    {line}\n" for line in lines)
    exec(source, env)
    check: Callable[[Any], None] = env[f"check_{model.__name__}"]
    return check


def _derive(
    model: type[BaseModel], *, nested: bool = True
) -> tuple[type[msgspec.Struct], Callable[[Any], None] | None]:
    """The struct mirroring ``model`` and the function running the rules msgspec does not (or None)."""
    if model.model_config.get("extra") == "forbid" or model.model_config.get("strict"):
        raise TypeError(f"wire: {model.__name__}: readers ignore unknown fields and read laxly")
    field_validators, model_validators = _after_validators(model)
    fields = [_field(n, info, field_validators.get(n, [])) for n, info in model.model_fields.items()]
    struct = msgspec.defstruct(
        model.__name__,
        [(f.name, f.kind) if f.default is msgspec.NODEFAULT else (f.name, f.kind, f.default) for f in fields],
        kw_only=True,
        gc=False,  # no reference cycles: the collector need not track one struct per field per event
        frozen=True,
        module=__name__,
    )
    checks = _compile_checks(model, fields, model_validators, nested=nested, memo=model not in _PERSONAL)
    _STRUCTS[model] = (struct, checks)
    return struct, checks


_EXACT: dict[type[BaseModel], type[msgspec.Struct]] = {}


def _exact(model: type[BaseModel]) -> type[msgspec.Struct]:
    """The struct mirroring ``model`` that msgspec's JSON decoder reads a value into exactly as ``orjson``
    then ``msgspec.convert`` to the struct of ``_derive`` would, or refuses: it forbids unknown fields
    (one it skipped could hold what orjson refuses: a number past a float's range), its integers are held
    to those orjson reads as integers, and it is only given UTF-8 values (a field it skipped could hold
    bytes that are not UTF-8: ``utf8``). The same fields and defaults, and the same checks run on it."""
    struct = _EXACT.get(model)
    if struct is None:
        field_validators, _ = _after_validators(model)
        fields = [
            _field(n, info, field_validators.get(n, []), exact=True) for n, info in model.model_fields.items()
        ]
        struct = _EXACT[model] = msgspec.defstruct(
            model.__name__,
            [
                (f.name, f.kind) if f.default is msgspec.NODEFAULT else (f.name, f.kind, f.default)
                for f in fields
            ],
            kw_only=True,
            gc=False,
            frozen=True,
            forbid_unknown_fields=True,
            module=__name__,
        )
    return struct


def struct_for(model: type[BaseModel]) -> type[msgspec.Struct]:
    """The struct mirroring ``model`` (derived once)."""
    return (_STRUCTS.get(model) or _derive(model))[0]


def _no_checks(data: Any) -> None:
    """The rules of a struct msgspec checks whole."""


def shallow_enough(value: bytes) -> bool:
    """Whether ``value`` cannot be nested deeper than ``NESTING_MAX`` (so no deeper than the contract reads):
    each level takes two bytes, so a short value cannot; a longer one has no more brackets than that."""
    return len(value) <= 2 * NESTING_MAX + 1 or value.count(b"[") + value.count(b"{") <= NESTING_MAX


def utf8(value: bytes) -> bool:
    """Whether ``value`` is UTF-8 (ASCII, in one C pass, or else decoding it): what orjson requires of
    every byte of a value, which msgspec's JSON decoder checks only in the fields it reads."""
    if value.isascii():
        return True
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


class _Reader:
    """Reads one family's data. A value ``orjson`` parsed (``read``) — the one parse of a record: consumers
    that take their data as plain values take it from there too (``Event.parsed``) — goes through
    msgspec's structural pass in C (``msgspec.convert`` to ``struct``), then the derived rules
    (``checks``, raising ``ValueError``, ``TypeError`` or ``AttributeError``). A value given as bytes
    (``decode``), where no parse is kept, is read by msgspec's JSON decoder straight into the exact struct
    (``_exact``) when it is UTF-8: at a fraction of the cost of building the parse, with the same verdict
    and values (``tests/unit/test_wire.py`` fuzzes the bytes); else, or where that refuses, as above. A
    caller that handles those errors itself (``contracts.envelope``'s quick path) may call the parts in
    turn and save a frame per event.

    orjson is the reference parser because it refuses what msgspec's JSON decoder skips unread in a field
    no struct has: invalid UTF-8, and numbers past a float's range (``1e400``), which the consumers, and
    readers of the stored value, could not read back. The exact struct has no field it skips."""

    __slots__ = ("checks", "exact", "struct")

    def __init__(self, model: type[BaseModel]) -> None:
        struct, checks = _STRUCTS.get(model) or _derive(model, nested=False)
        self.struct = struct
        self.checks: Callable[[Any], None] = checks or _no_checks
        self.exact: Callable[[bytes], Any] = msgspec.json.Decoder(_exact(model)).decode

    def read(self, parsed: Any) -> Any:
        """The data of a value ``orjson`` parsed (and ``shallow_enough``), or ``Invalid`` where the
        contract may refuse it."""
        data = msgspec.convert(parsed, self.struct)
        try:
            self.checks(data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise msgspec.ValidationError(str(exc)) from None
        return data

    def decode(self, value: bytes) -> Any:
        """The data, or ``Invalid`` where the contract may refuse it."""
        if utf8(value):
            try:
                data = self.exact(value)
            except msgspec.DecodeError:
                pass  # e.g. a field no contract reads: judged on orjson's parse below
            else:
                try:
                    self.checks(data)
                except (ValueError, TypeError, AttributeError) as exc:
                    raise msgspec.ValidationError(str(exc)) from None
                return data
        # Only here: the exact struct reads no deeper than its fields' types, orjson's parse any depth.
        if not shallow_enough(value):
            raise msgspec.DecodeError("nested deeper than the contract may read")
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise msgspec.DecodeError("not JSON that orjson reads") from None
        return self.read(parsed)


_FAMILIES: dict[str, type[BaseModel]] = {
    "registration": Registration,
    "consent": Consent,
    "referral": Referral,
    "placement": Placement,
    "retention": Retention,
    "erasure": Erasure,
}
DATA: dict[str, _Reader] = {family: _Reader(model) for family, model in _FAMILIES.items()}
"""Per family (its name, e.g. ``"consent"``): the decoder of its data, raising ``Invalid``."""


_BY_MODEL = {model: DATA[family] for family, model in _FAMILIES.items()}


def from_model(model: BaseModel) -> Any:
    """The struct of data the contract accepted where the fast decoder refused (e.g. more brackets than
    ``NESTING_MAX`` in a field no contract reads): the fast decoder reads the model's canonical form."""
    return _BY_MODEL[type(model)].decode(model.model_dump_json().encode())


def checked_struct(
    model: type[BaseModel], *, standing_in: Mapping[str, Any] | None = None
) -> tuple[type[msgspec.Struct], Callable[[Any], None] | None]:
    """The struct mirroring ``model`` and the function running the rules msgspec does not (``None`` if
    there are none): the consume side's decoder, for a producer that converts values it parsed itself
    (a batch file's cells) with ``msgspec.convert``. Either refusing is a refusal; the caller asks the
    contract for the reason.

    ``standing_in``: for a field holding a struct, one instance of it the caller made and puts there
    itself while it judges the other fields (the batch import's placeholder for a personal block, judged
    by its own contract and sealed later): the checks skip that field's struct when it is that very
    object (``is``), and check every other value, equal to it or not. Checks of their own (no memo of
    whole values that passed: a value holding the stand-in would stand for an equal one)."""
    if not standing_in:
        return _STRUCTS.get(model) or _derive(model)
    struct, _ = _STRUCTS.get(model) or _derive(model)
    field_validators, model_validators = _after_validators(model)
    fields = [_field(n, info, field_validators.get(n, [])) for n, info in model.model_fields.items()]
    unknown = set(standing_in) - {f.name for f in fields if f.nested is not None}
    if unknown:
        raise TypeError(f"wire: {model.__name__}: no struct checked in {sorted(unknown)} to stand in for")
    checks = _compile_checks(
        model, fields, model_validators, nested=True, memo=model not in _PERSONAL, standing_in=standing_in
    )
    return struct, checks


_Plan = tuple[tuple[str, ...], tuple[tuple[str, Any], ...]]  # (optional fields, (field, inner plan) …)
_PLANS: dict[type[msgspec.Struct], _Plan] = {}


def _none_plan(model: type[BaseModel]) -> _Plan:
    """Where ``exclude_none`` drops a value in a dump of ``model``: its fields that default to None, and
    the fields holding models (or lists of them), with their own plans."""
    optional = tuple(
        name for name, info in model.model_fields.items() if not info.is_required() and info.default is None
    )
    inner: list[tuple[str, Any]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        candidates = [annotation, *get_args(annotation)]
        for candidate in list(candidates):
            if get_origin(candidate) is list:
                candidates += get_args(candidate)
        models = list({c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)})
        if len(models) > 1:
            raise TypeError(f"wire: {model.__name__}.{name}: a union of models")
        if models:
            plan = _none_plan(models[0])
            if plan[0] or plan[1]:
                inner.append((name, plan))
    return optional, tuple(inner)


def _drop_none(plan: _Plan, out: Any) -> None:
    if isinstance(out, list):
        for item in out:
            _drop_none(plan, item)
        return
    optional, inner = plan
    for name in optional:
        if out[name] is None:
            del out[name]
    for name, inner_plan in inner:
        value = out.get(name)
        if value is not None:
            _drop_none(inner_plan, value)


def builtins_of(data: Any) -> dict[str, Any]:
    """A derived struct's values as ``model_dump(mode="json", exclude_none=True)`` gives them for the
    model it mirrors: in the model's field order, enums as their values, dates and times as ISO text,
    None left out (``tests/unit/test_wire.py`` holds them equal to pydantic's)."""
    out: dict[str, Any] = msgspec.to_builtins(data)
    plan = _PLANS.get(type(data))
    if plan is None:
        (model,) = [m for m, (struct, _) in _STRUCTS.items() if struct is type(data)] or [
            m for m, struct in _EXACT.items() if struct is type(data)
        ]
        plan = _PLANS[type(data)] = _none_plan(model)
    _drop_none(plan, out)
    return out
