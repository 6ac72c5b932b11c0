"""The batch import's row judge (``producers.adapters.csv_chunks``) against the contract it stands for.

A file's rows are judged by the contract's msgspec structs (``contracts.wire``) and built without a
pydantic model per row. Over ``hypothesis``-made rows (every family's cells, mutated with hostile cells
and with cells of other columns): the structs accept exactly the rows the pydantic input model accepts,
every refusal is the contract's (same fields, same rules), and an accepted row becomes the same event,
byte for byte, as the pydantic path builds (``submission.build_event``, sealed under the same nonce).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import hypothesis
import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.envelope import MODELS, Event, Family, encode, event_type, header_texts
from contracts.events import Contract, Sealed
from infra.codecs import csv_rows
from infra.codecs.csv_rows import Header, ParsedRow, parse_chunk, read_chunks, read_header
from infra.codecs.csv_write import write_csv
from infra.codecs.field_errors import FieldError
from producers.adapters import csv_chunks
from producers.adapters.authorization import authorised_fields
from producers.adapters.csv_chunks import FamilyRows, seal_rows
from producers.submission import Checked, build_event, check, seal_checked
from tests import factories

FAMILIES = (Family.REGISTRATION, Family.CONSENT, Family.REFERRAL, Family.PLACEMENT, Family.RETENTION)
PK = "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"
KEY = bytes(range(32))

HOSTILE = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x1f",
    "\x7f",
    "x" * 1_000_000,
    "x" * 201,
    "2147483647",
    "2147483648",
    "-1",
    "0",
    "２１４７４８３６４８",
    "０８",
    "=1+1",
    "=HYPERLINK(1)",
    "+81 3",
    "@SUM(A1)",
    "2024-02-30",
    "R7.2.30",
    "2025-13-01",
    "令和7年5月12日",
    "2099-01-01",
    "1900-01-01",
    "２０２５－０５－１２",
    "2025-04-03T10:00:00",
    "2025-04-03T10:00:00Z",
    "2025-04-03T10:00:00.1234567+09:00",
    "112038-01",
    "131041-01",
    "131041",
    "131042",
    "1102",
    "1301",
    "Ｆ" * 32,
    "1" * 31,
    "e" * 32,
    "99",
    "08",
    "MHLW-2022",
    "MHLW-1999",
    "はい",
    "true",
    "yes",
    "×",
    "３５-３９",
    "35-39",
    "public_assistance;public_assistance",
    "public_assistance;２１４７４８３６４８",
    ";".join(["general"] * 9),
    "given",
    "withdrawn",
    "撤回",
    "share_registration",
    "share_registration;share_registration",
    "authority:131041",
    "office:1301;authority:131041",
    "authority:131042",
    "office:١١٠٢",
    "left",
    "employed",
    "3",
    "7",
    "12345-12345678",
    "１２３４５-12345678",
]


def _valid_cells(family: Family) -> tuple[list[str], list[list[str]]]:
    """Header (English names) and two valid rows of ``family``, as a client writes them."""
    placement_id = "ab" * 16
    made = {
        Family.REGISTRATION: [factories.registration(PK), factories.registration(PK, foreign_national=True)],
        Family.CONSENT: [factories.consent(PK), factories.consent(PK, action="changed")],
        Family.REFERRAL: [factories.referral(PK), factories.referral(PK, team_support_from="2025-05-20")],
        Family.PLACEMENT: [factories.placement(PK), factories.placement(PK, foreign_national=False)],
        Family.RETENTION: [
            factories.retention(PK, placement_id),
            factories.retention(PK, placement_id, status="left", left_on="2025-06-01"),
        ],
    }[family]
    text = write_csv(family.value, [m.data for m in made], japanese=False).decode()
    header, *rows = csv.reader(io.StringIO(text, newline=""))
    return header, rows


_VALID = {f: _valid_cells(f) for f in FAMILIES}
_HEADERS = {f: read_header(f.value, _VALID[f][0]) for f in FAMILIES}


@st.composite
def rows(draw: st.DrawFn) -> tuple[Family, ParsedRow]:
    """A row of cells: a valid one with some cells replaced by hostile ones or by other columns' cells."""
    family = draw(st.sampled_from(FAMILIES))
    _header, valid = _VALID[family]
    cells = list(draw(st.sampled_from(valid)))
    pool = [*HOSTILE, *(c for row in valid for c in row)]
    for _ in range(draw(st.integers(0, 3))):
        cells[draw(st.integers(0, len(cells) - 1))] = draw(st.sampled_from(pool) | st.text(max_size=12))
    (parsed,) = parse_chunk(_HEADERS[family], [(2, cells)])
    return family, parsed


@st.composite
def chunks(draw: st.DrawFn) -> tuple[Family, list[tuple[int, list[str]]]]:
    """A family's rows of cells as a file holds them: valid rows with hostile cells, other columns' cells
    (bare or padded) and the columns' Japanese values put in, rows of too few or too many cells, rows repeated."""
    family = draw(st.sampled_from(FAMILIES))
    _header, valid = _VALID[family]
    japanese = [j for c in _HEADERS[family].columns for j in c.synonyms]
    cells_of_rows = [c for row in valid for c in row]
    pool = [*HOSTILE, *japanese, *cells_of_rows, *(f" {c}\t" for c in cells_of_rows)]
    made: list[tuple[int, list[str]]] = []
    for line in range(2, 2 + draw(st.integers(1, 8))):
        if made and draw(st.booleans()):
            made.append((line, list(draw(st.sampled_from(made))[1])))  # a row seen: its cells remembered
            continue
        cells = list(draw(st.sampled_from(valid)))
        for _ in range(draw(st.integers(0, 4))):
            cells[draw(st.integers(0, len(cells) - 1))] = draw(st.sampled_from(pool) | st.text(max_size=12))
        if draw(st.integers(0, 9)) == 0:
            cells = cells[:-1] if draw(st.booleans()) else [*cells, ""]
        made.append((line, cells))
    return family, made


def _cell_by_cell(header: Header, raw: list[tuple[int, list[str]]]) -> list[ParsedRow]:
    """``parse_chunk`` as its rules read: each row alone, each cell by the column's ``_convert``."""
    width = len(header.columns)
    parsed = []
    for line, cells in raw:
        if len(cells) != width:
            refusal = FieldError(
                "(row)", f"has {len(cells)} cells, the header has {width}", None, "cell count"
            )
            parsed.append(ParsedRow(line, {}, (refusal,)))
            continue
        data: dict[str, Any] = {}
        errors = []
        for column, label, cell in zip(header.columns, header.labels, cells, strict=True):
            if not cell or cell.isspace():
                continue
            try:
                value = csv_rows._convert(column, cell)
            except ValueError as exc:
                errors.append(
                    FieldError(".".join(column.path), str(exc), cell, f"{column.kind.value} format", label)
                )
                continue
            csv_rows._put(data, column.path, value)
        for path, when, none in header.none_when:
            if csv_rows._get(data, when) == none and csv_rows._get(data, path) is None:
                csv_rows._put(data, path, [])
        parsed.append(ParsedRow(line, {} if errors else data, tuple(errors)))
    return parsed


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks(), st.integers(1, 8))
def test_fuzz_a_chunk_is_read_as_each_cell_alone_would_be(
    case: tuple[Family, list[tuple[int, list[str]]]], split: int
) -> None:
    """A chunk is converted column by column, with the file's memory of cells (``parse_chunk``): it reads
    each row as converting each of its cells alone does (``_convert``), the same values (in the same
    order) and the same refusals (field, rule, column), in a file's first chunk and in a later one that
    meets cells remembered; and a list is never one object shared by two rows."""
    family, raw = case
    header = read_header(family.value, _VALID[family][0])  # a file's header: its memory starts empty
    got = parse_chunk(header, raw[:split]) + parse_chunk(header, raw[split:]) + parse_chunk(header, raw)
    expected = _cell_by_cell(header, raw) * 2
    assert [(p.line, p.errors) for p in got] == [(p.line, p.errors) for p in expected]
    # repr: the values and their order, at any depth (an int cell past 64 bits is a value here too)
    assert [repr(p.data) for p in got] == [repr(p.data) for p in expected]
    lists = [id(v) for p in got for v in _values(p.data) if isinstance(v, list)]
    assert len(lists) == len(set(lists)), "a list shared by two rows: a change to one changes the other"


def _values(data: dict[str, Any]) -> list[Any]:
    return [w for v in data.values() for w in ([v, *_values(v)] if isinstance(v, dict) else [v])]


def _pydantic_event(family: Family, checked: Checked) -> Event:
    return build_event(checked, "/hellowork/offices/1301", seal_checked(checked, KEY))


def _same(family: Family, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The judge's verdict on ``data`` is the contract's; an accepted row builds the contract's event."""
    judge = FamilyRows(family)
    expected = check(family, data)
    fast = judge.fast(data)
    if isinstance(expected, list):
        assert fast is None, "the structs accepted a row the contract refuses"
        judged = judge.judge([(2, data, "k")], lambda f: None)
        assert judged.rows == [] and [e for _, e in judged.bad] == expected
        return
    assert fast is not None, "the structs refused a row the contract accepts"
    (row,) = judge.judge([(2, data, "k")], lambda f: None).rows
    assert dict(row.view) == dict(authorised_fields(expected.data))
    # Same nonce for both (and the same event id and time): then the two events are the same bytes.
    monkeypatch.setattr(csv_chunks.os, "urandom", lambda n: bytes(n))
    monkeypatch.setattr("infra.crypto.os.urandom", lambda n: bytes(n))
    (event,) = seal_rows(family, [row], ["/hellowork/offices/1301"], {row.subject: KEY})
    expected_event = _pydantic_event(family, expected)._replace(id=event.id, time=event.time)
    assert event.type == event_type(family) and event.subject == expected_event.subject
    assert encode(event) == encode(expected_event)
    assert judge.value_of(event) == encode(expected_event)[2]  # the outbox's value of a file's event


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows())
def test_fuzz_the_row_judge_accepts_refuses_and_builds_as_the_contract(
    case: tuple[Family, ParsedRow],
) -> None:
    family, parsed = case
    if parsed.errors:  # a cell that is no date, number or yes/no: refused before either judge
        return
    with pytest.MonkeyPatch.context() as monkeypatch:
        _same(family, parsed.data, monkeypatch)


def test_every_family_has_rows_both_accept_and_rows_both_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzz is not vacuous: valid rows of every family are accepted, and hostile ones refused."""
    for family in FAMILIES:
        header, valid = _VALID[family]
        for parsed in parse_chunk(_HEADERS[family], [(2, cells) for cells in valid]):
            assert parsed.errors == () and FamilyRows(family).fast(parsed.data) is not None, family
            _same(family, parsed.data, monkeypatch)
        hostile = [*valid[0]]
        hostile[header.index("person_key")] = "Ｆ" * 32
        (parsed,) = parse_chunk(_HEADERS[family], [(2, hostile)])
        assert FamilyRows(family).fast(parsed.data) is None, family


def test_the_fuzz_finds_a_judge_that_skips_the_contracts_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the checks msgspec does not run itself (patterns, validators, the model's own rules), the
    judge accepts what the contract refuses, and the fuzz's strategy finds such a row."""
    monkeypatch.setattr(FamilyRows, "__init__", _without_checks(FamilyRows.__init__))

    def looser(case: tuple[Family, ParsedRow]) -> bool:
        family, parsed = case
        return not parsed.errors and (
            isinstance(check(family, parsed.data), list) and FamilyRows(family).fast(parsed.data) is not None
        )

    hypothesis.find(rows(), looser, settings=settings(max_examples=2000, database=None))


def _without_checks(init: Any) -> Any:
    def patched(self: FamilyRows, family: Family) -> None:
        init(self, family)
        self.checks = None

    return patched


def test_one_time_for_a_chunks_events() -> None:
    _header, valid = _VALID[Family.PLACEMENT]
    parsed = parse_chunk(_HEADERS[Family.PLACEMENT], [(2, cells) for cells in valid])
    judged = FamilyRows(Family.PLACEMENT).judge([(p.line, p.data, str(i)) for i, p in enumerate(parsed)], str)
    before = datetime.now(UTC)
    events = seal_rows(Family.PLACEMENT, judged.rows, ["/hellowork/offices/1301"] * 2, {PK: KEY})
    assert len({e.id for e in events}) == 2 and {e.time for e in events} == {events[0].time}
    assert events[0].time >= before
    assert all(orjson.loads(encode(e)[2])["personal"]["kid"] == f"pdk-{PK}-1" for e in events)


def test_a_withdrawal_row_is_the_http_withdrawal_and_a_grant_row_still_needs_its_scopes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a file could not record a withdrawal of consent. The contract's rule is that a withdrawal
    carries no scopes (and needs no recipients), and a file writes "none" as an empty cell, which read as
    absent: every withdrawal row was refused with ``scopes: Field required``. On a withdrawal row (撤回) an
    empty 同意範囲 or 提供先 cell is now the empty list, and the row is the same event as the same
    withdrawal sent over HTTP; on a grant row an empty 同意範囲 cell is still the contract's ``missing``."""
    withdrawal = factories.consent(PK, action="withdrawn").data
    bare = factories.consent(PK, action="withdrawn", recipients=[]).data
    grant = factories.consent(PK, scopes=[]).data
    text = write_csv(Family.CONSENT.value, [withdrawal, bare, grant], japanese=True)
    text = text.replace(b",withdrawn,", ",撤回,".encode())
    reading = read_chunks(Family.CONSENT.value, text, chunk_rows=10)
    ((parsed, error),) = list(reading.chunks)
    assert error is None and [p.errors for p in parsed] == [(), (), ()]
    judge = FamilyRows(Family.CONSENT)
    judged = judge.judge([(p.line, p.data, "k") for p in parsed], lambda f: None)

    assert [line for line, _ in judged.bad] == [4]
    (refusal,) = [e for _, e in judged.bad]
    assert refusal == FieldError("scopes", "Field required", None, "missing")
    assert [refusal] == check(Family.CONSENT, {k: v for k, v in grant.items() if k != "scopes"})

    monkeypatch.setattr(csv_chunks.os, "urandom", lambda n: bytes(n))
    monkeypatch.setattr("infra.crypto.os.urandom", lambda n: bytes(n))
    for row, body in zip(judged.rows, [withdrawal, bare], strict=True):
        over_http = judge.judge_body(body)
        assert isinstance(over_http, csv_chunks.Row)
        (from_file,) = seal_rows(Family.CONSENT, [row], ["/hellowork/offices/1301"], {PK: KEY})
        (from_http,) = seal_rows(Family.CONSENT, [over_http], ["/hellowork/offices/1301"], {PK: KEY})
        assert encode(from_file._replace(time=from_http.time)) == encode(from_http)
        assert orjson.loads(encode(from_file)[2])["scopes"] == []
    for p in parsed[:2]:
        _same(Family.CONSENT, p.data, monkeypatch)

    # A file of withdrawals may leave the two columns out: each of its cells would be empty.
    header, row = list(csv.reader(io.StringIO(text.decode(), newline="")))[:2]
    kept = [i for i, label in enumerate(header) if label not in ("同意範囲", "提供先")]
    (no_columns,) = parse_chunk(
        read_header("consent", [header[i] for i in kept]), [(2, [row[i] for i in kept])]
    )
    assert no_columns.data == {**parsed[0].data, "recipients": []}
    assert not isinstance(check(Family.CONSENT, no_columns.data), list)


def test_a_personal_blocks_json_is_its_builtins_json_without_the_absent_fields() -> None:
    """``_json_of`` leaves out the nulls of fields that default to None, as ``wire.builtins_of`` does, and
    only those: a text that spells one (``,"phone":null``) stays as it is."""
    import msgspec

    from contracts import wire
    from contracts.envelope import PERSONAL_MODELS

    struct, _ = wire.checked_struct(PERSONAL_MODELS[Family.REGISTRATION])
    encode_ = csv_chunks._json_of(PERSONAL_MODELS[Family.REGISTRATION])
    for fields in (
        {},
        {"phone": "03", "email": None},
        {"name_kana": "ヤマダ", "address": '東京,"phone":null', "job_seeker_number": "12345-12345678"},
    ):
        value = msgspec.convert({"name": 'a,"email":null', "birth_date": "1990-01-02", **fields}, struct)
        assert encode_(value) == msgspec.json.encode(wire.builtins_of(value))
    assert b'"phone":null' not in encode_(msgspec.convert({"name": "a", "birth_date": "1990-01-02"}, struct))


class _Inner(Contract):
    code: str
    note: str | None = None


class _Outer(Contract):
    person_key: str
    inner: _Inner
    rest: list[_Inner]
    label: str | None = None


class _Clashing(Contract):
    person_key: str
    inner: _Inner
    note: str | None = None


def test_a_models_json_leaves_out_nested_nulls_as_its_builtins_do() -> None:
    """Where a held model has fields that default to None (or shares a name with the model's own), the
    JSON is the builtins' (``_json_of`` cannot tell those nulls apart): the same bytes either way."""
    import msgspec

    from contracts import wire

    for model in (_Outer, _Clashing):
        struct, _ = wire.checked_struct(model)
        encode_ = csv_chunks._json_of(model)
        for data in (
            {"person_key": "a", "inner": {"code": "x"}, "rest": [{"code": "y"}]},
            {"person_key": "a", "inner": {"code": "x", "note": "n"}, "rest": [], "label": "l", "note": "m"},
        ):
            value = msgspec.convert(data, struct)
            assert encode_(value) == msgspec.json.encode(wire.builtins_of(value)), model


_TEXTS = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(
        st.tuples(
            st.one_of(st.just("3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"), _TEXTS),  # id
            st.one_of(st.just(PK), _TEXTS),  # subject
            st.sampled_from(["/hellowork/offices/1102", "/authorities/131041", 'a"\\\x00\x01']),
            st.sampled_from(FAMILIES),
            st.integers(0, 2),  # time
            st.one_of(st.none(), st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), _TEXTS),
            st.one_of(st.none(), _TEXTS),  # tracestate
        ),
        max_size=8,
    )
)
def test_fuzz_a_chunks_headers_json_is_the_json_of_their_header_texts(events: list[tuple[Any, ...]]) -> None:
    """The outbox headers a chunk stages (``HeadersJson``, a template a source, type, time and trace
    context) are ``orjson.dumps(header_texts(event))`` for every event, whatever its id, subject and
    trace context hold (quotes, backslashes, control characters, the template's own marks)."""
    headers_of = csv_chunks.HeadersJson()
    for ident, subject, source, family, second, traceparent, tracestate in events:
        event = Event(
            ident,
            source,
            event_type(family),
            subject,
            datetime(2026, 11, 28, 12, 0, second, tzinfo=UTC),
            family,
            None,
            traceparent,
            tracestate,
        )
        assert headers_of(event) == orjson.dumps(header_texts(event)).decode()


def test_the_stand_in_for_a_personal_block_lets_no_other_block_through_unchecked() -> None:
    """A row's public fields are judged with ``personal`` held by one placeholder object (``_STAND_IN``),
    whose checks ``wire.checked_struct(standing_in=...)`` passes over. That object alone: a block equal
    to it is checked, one that breaks a rule is refused, and the other fields are checked as ever."""
    _struct, sealed_checks = csv_chunks.wire.checked_struct(Sealed)
    assert sealed_checks is not None
    sealed_checks(csv_chunks._STAND_IN)  # it passes the checks it skips: skipping changes no verdict
    forged = csv_chunks._SEALED(**{**csv_chunks._PLACEHOLDER, "kid": "pdk-../../etc-1"})
    with pytest.raises(ValueError):
        sealed_checks(forged)
    tried = 0
    for family in FAMILIES:
        judge = FamilyRows(family)
        if judge.personal is None:
            continue
        _header, valid = _VALID[family]
        (parsed,) = parse_chunk(_HEADERS[family], [(2, valid[0])])
        built = judge.fast(parsed.data)
        assert built is not None and built[0].personal is csv_chunks._STAND_IN, family
        assert judge.checks is not None
        value = built[0]
        judge.checks(value)
        judge.checks(msgspec.structs.replace(value, personal=csv_chunks._SEALED(**csv_chunks._PLACEHOLDER)))
        with pytest.raises(ValueError, match="kid"):
            judge.checks(msgspec.structs.replace(value, personal=forged))  # equal shape, not the object
        with pytest.raises(ValueError, match="person_key"):
            judge.checks(msgspec.structs.replace(value, person_key="Ｆ" * 32))  # the others still checked
        # The same data with a block of its own as ``personal`` (a body that sends one): checked.
        with_block = {**parsed.data, "personal": {**csv_chunks._PLACEHOLDER, "kid": "pdk-../../etc-1"}}
        assert msgspec.convert(with_block, judge.struct).personal is not csv_chunks._STAND_IN
        tried += 1
    assert tried >= 3
    # Every other reader (the consumers' decoder) keeps the checks that skip nothing.
    assert (
        csv_chunks.wire.checked_struct(MODELS[Family.PLACEMENT])[1] is not FamilyRows(Family.PLACEMENT).checks
    )
    with pytest.raises(TypeError):
        csv_chunks.wire.checked_struct(MODELS[Family.PLACEMENT], standing_in={"person_key": "x"})
