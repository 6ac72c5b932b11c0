"""Batch file reading without a broker: encodings, headers, era dates, cell conversions, line numbers."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.codecs.csv_columns import COLUMNS
from infra.codecs.csv_rows import FileError, decode
from infra.codecs.csv_write import era_short, write_csv
from tests import factories
from tests.helpers import read_rows

REFERRAL_HEADER = "送り込みID,個人キー,自治体コード,拠点ID,支援事業,送り込み日,ケース番号"
PK = "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"
RID = "0" * 32


def referral_line(when: str, programme: str = "一般") -> str:
    return f"{RID},{PK},131041,131041-01,{programme},{when},K-1"


@pytest.mark.parametrize(
    ("written", "iso"),
    [
        ("令和6年4月1日", "2024-04-01"),
        ("R6.4.1", "2024-04-01"),
        ("平成31年4月30日", "2019-04-30"),
        ("令和元年5月1日", "2019-05-01"),
        ("2024/4/1", "2024-04-01"),
        ("２０２４－０４－０１".replace("－", "-"), "2024-04-01"),
    ],
)
def test_dates_iso_or_era(written: str, iso: str) -> None:
    _, _, rows = read_rows("referral", f"{REFERRAL_HEADER}\n{referral_line(written)}\n".encode())
    (row,) = rows
    assert row.errors == () and row.data["referred_on"] == iso


def test_cp932_crlf_with_japanese_values() -> None:
    content = (
        f"{REFERRAL_HEADER}\r\n{referral_line('R6.4.1', '生活保護受給者等就労自立促進事業')}\r\n".encode(
            "cp932"
        )
    )
    encoding, _, rows = read_rows("referral", content)
    (row,) = rows
    assert encoding == "cp932"
    assert row.data["programme"] == "public_assistance_employment" and row.data["personal"] == {
        "case_number": "K-1"
    }


def test_utf8_with_bom_keeps_characters_cp932_lacks() -> None:
    text, encoding = decode("\ufeff氏名\n𠮷田 髙志\n".encode())
    assert encoding == "utf-8" and text == "氏名\n𠮷田 髙志\n"
    with pytest.raises(UnicodeEncodeError):
        "𠮷".encode("cp932")


def test_neither_utf8_nor_cp932_is_a_file_error() -> None:
    with pytest.raises(FileError, match="neither UTF-8"):
        decode(b"\x81\x7f\xff\xff")


def test_header_unknown_repeated_and_missing_columns() -> None:
    with pytest.raises(FileError) as info:
        read_rows("referral", "referral_id,個人キー,person_key,colour\n".encode())
    message = str(info.value)
    assert "column 3 repeats column person_key (個人キー)" in message
    assert "column 4 is not a referral column" in message and "colour" not in message
    assert "missing required column(s): authority (自治体コード), site (拠点ID)" in message


def test_line_numbers_follow_the_file_with_quoted_newlines_and_blank_lines() -> None:
    content = (
        f"{REFERRAL_HEADER}\n{referral_line('R6.4.1')}\n\n"
        f'{RID},{PK},131041,131041-01,一般,R6.2.30,"K\n2"\n{referral_line("R6.13.1")}\n'
    ).encode()
    _, _, rows = read_rows("referral", content)
    parsed = list(rows)
    assert [r.line for r in parsed] == [2, 4, 6]
    assert parsed[1].errors[0].message == (
        "送り込み日 (referred_on): not a real date: the day is outside its month"
    )
    assert parsed[1].errors[0].operator_rule == "referred_on: date format"
    assert parsed[2].errors[0].rule.endswith("the month is outside 1 to 12")


def test_cell_count_mismatch() -> None:
    _, _, rows = read_rows("referral", f"{REFERRAL_HEADER}\n{RID},{PK}\n".encode())
    (row,) = rows
    assert row.errors[0].message == "(row): has 2 cells, the header has 7"


def test_booleans_lists_recipients_and_datetimes() -> None:
    reg = factories.registration(PK).data
    reg["team_support"] = False
    (row,) = read_rows("registration", write_csv("registration", [reg]))[2]
    assert row.data == reg
    consent = factories.consent(PK).data
    content = write_csv("consent", [consent], japanese=False).replace(b"+09:00", b"")
    (row,) = read_rows("consent", content)[2]
    assert row.data["recipients"] == [
        {"kind": "authority", "code": "131041"},
        {"kind": "office", "code": "1301"},
    ]
    assert row.data["captured"]["signed_at"] == "2025-04-03T10:00:00+09:00", "no offset means Japan time"
    assert row.data["scopes"] == consent["scopes"]


def test_every_family_round_trips_through_a_file() -> None:
    for sub in factories.one_of_each(PK):
        for japanese, era, encoding in ((True, True, "utf-8"), (False, False, "utf-8")):
            (row,) = read_rows(
                sub.family.value,
                write_csv(sub.family.value, [sub.data], japanese=japanese, era=era, encoding=encoding),
            )[2]
            assert row.errors == () and row.data == sub.data, sub.family


def test_era_short() -> None:
    from datetime import date

    assert era_short(date(2024, 4, 1)) == "R6.4.1"
    assert era_short(date(2019, 4, 30)) == "H31.4.30"


def test_docs_list_every_column() -> None:
    from pathlib import Path

    from infra.codecs.csv_columns import COLUMNS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "adapters.md").read_text(encoding="utf-8")
    for family, columns in COLUMNS.items():
        section = doc.split(f"### {family}\n", 1)[1].split("### ", 1)[0]
        for column in columns:
            assert f"| `{column.en}` | {column.ja} |" in section, (family, column.en)


def _leaf_paths(model: type, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every field a client may send, as a column path (nested objects by their fields, lists as one cell)."""
    from typing import get_args

    from pydantic import BaseModel

    paths: set[tuple[str, ...]] = set()
    for name, info in model.model_fields.items():
        nested = [a for a in (info.annotation, *get_args(info.annotation)) if isinstance(a, type)]
        inner = next((a for a in nested if issubclass(a, BaseModel) and a.__name__ != "Recipient"), None)
        paths |= _leaf_paths(inner, (*prefix, name)) if inner is not None else {(*prefix, name)}
    return paths


def test_every_field_the_json_api_takes_has_a_column() -> None:
    """Before: the v1.1 optional fields (foreign_national, prior_application_office, team_support_from)
    were accepted over JSON and refused as unknown columns in a file."""
    from infra.codecs.csv_columns import COLUMNS
    from producers.adapters.authorization import FAMILIES
    from producers.submission import _INPUT_MODELS

    # Every family an adapter takes (the hub's own erasures are no client's to send).
    for family in {f for taken in FAMILIES.values() for f in taken}:
        columns = {c.path for c in COLUMNS[family.value]}
        assert _leaf_paths(_INPUT_MODELS[family]) == columns, family


def test_the_optional_fields_of_v1_1_travel_in_a_file() -> None:
    reg = factories.registration(PK, foreign_national=True, prior_application_office="1102").data
    ref = factories.referral(PK, team_support_from="2025-05-20").data
    placement = factories.placement(PK, foreign_national=False).data
    for family, data in (("registration", reg), ("referral", ref), ("placement", placement)):
        for japanese, era in ((True, True), (False, False)):
            (row,) = read_rows(family, write_csv(family, [data], japanese=japanese, era=era))[2]
            assert row.errors == () and row.data == data, (family, row.errors)


def _with_cell(family: str, data: dict[str, object], column: str, cell: str) -> bytes:
    """A one-row file of ``data`` whose ``column`` (Japanese header) holds ``cell`` as written."""
    import csv
    import io

    header, row = csv.reader(io.StringIO(write_csv(family, [data]).decode(), newline=""))
    row[header.index(column)] = cell
    out = io.StringIO()
    csv.writer(out).writerows([header, row])
    return out.getvalue().encode()


@pytest.mark.parametrize(
    ("column", "cell", "field", "rule"),
    [
        ("外国人", "=1+1", "foreign_national", "is not yes/no"),
        ("外国人", "1\x00", "foreign_national", "is not yes/no"),
        ("外国人", "はい" * 200, "foreign_national", "is not yes/no"),
        ("既申込安定所コード", "=1102", "prior_application_office", "should match pattern '^[0-9]{4}$'"),
        ("既申込安定所コード", "11\x0002", "prior_application_office", "should match pattern"),
        ("既申込安定所コード", "1" * 500, "prior_application_office", "should match pattern"),
        ("既申込安定所コード", "١١٠٢", "prior_application_office", "should match pattern"),  # Arabic-Indic
    ],
)
def test_hostile_cells_in_the_new_registration_columns_are_refused_by_rule(
    column: str, cell: str, field: str, rule: str
) -> None:
    """Refused naming the field and the rule; the operator's rule carries no value."""
    from producers.submission import check

    content = _with_cell("registration", factories.registration(PK).data, column, cell)
    (row,) = read_rows("registration", content)[2]
    errors = list(row.errors)
    if not errors:
        from contracts.envelope import Family

        result = check(Family.REGISTRATION, row.data)
        assert isinstance(result, list), "a hostile cell was accepted"
        errors = result
    (error,) = [e for e in errors if e.field == field]
    assert rule in error.rule
    assert cell not in error.operator_rule and cell[:4] not in error.operator_rule


def test_full_width_digits_in_the_prior_office_cell_are_read_as_the_code_like_every_code_column() -> None:
    """A file's code cells are NFKC-normalised (hand-typed forms); the event only ever holds ASCII."""
    content = _with_cell("registration", factories.registration(PK).data, "既申込安定所コード", "１１０２")
    (row,) = read_rows("registration", content)[2]
    assert row.errors == () and row.data["prior_application_office"] == "1102"


@pytest.mark.parametrize("cell", ["=R7.5.20", "R7.5.20\x00", "R7.13.1", "2" * 300])
def test_hostile_cells_in_team_support_from_are_refused_by_rule(cell: str) -> None:
    header = f"{REFERRAL_HEADER},チーム支援開始日"
    (row,) = read_rows("referral", f'{header}\n{referral_line("R7.5.1")},"{cell}"\n'.encode())[2]
    (error,) = row.errors
    assert error.field == "team_support_from" and error.operator_rule == "team_support_from: date format"


def test_team_support_from_before_the_referral_is_refused_naming_the_rule() -> None:
    from contracts.envelope import Family
    from producers.submission import check

    header = f"{REFERRAL_HEADER},チーム支援開始日"
    (row,) = read_rows("referral", f"{header}\n{referral_line('R7.5.1')},R7.4.30\n".encode())[2]
    result = check(Family.REFERRAL, row.data)
    assert isinstance(result, list) and "team_support_from is before referred_on" in result[0].rule


class _Recorded(io.BytesIO):
    """A file that remembers how much each read asked for."""

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.asked: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.asked.append(-1 if size is None else size)
        return super().read(size)

    def read1(self, size: int = -1, /) -> bytes:
        self.asked.append(size)
        return super().read1(size)


def test_a_file_is_read_a_block_at_a_time_never_whole() -> None:
    """Before: the importer read and decoded the whole file (an upload of 1M rows was ~1 GB of text)."""
    from infra.codecs.csv_rows import read_chunks

    data = factories.placement(PK).data
    content = write_csv("placement", [data] * 12_000)  # ~3 MB
    source = _Recorded(content)
    reading = read_chunks("placement", source, chunk_rows=2000)
    rows = [row for parsed, error in reading.chunks for row in parsed if error is None]
    assert len(rows) == 12_000 and reading.lines == 12_001
    assert source.asked and all(0 < size <= 1 << 20 for size in source.asked), sorted(set(source.asked))
    assert not source.closed  # the caller's file: closing it is the caller's


def test_an_invalid_byte_past_the_first_block_is_named_at_the_offset_a_whole_decode_names() -> None:
    late = "\ufeff氏名\n".encode() + b"a" * (1 << 20) + b"\x81\x7f"
    offsets = []
    for encoding in ("utf-8-sig", "cp932"):
        with pytest.raises(UnicodeDecodeError) as whole:
            late.decode(encoding)
        offsets.append(whole.value.start)
    utf8, cp932 = offsets
    assert utf8 > 1 << 20  # past the first block read
    with pytest.raises(
        FileError,
        match=rf"UTF-8 \(invalid byte at offset {utf8}\) nor CP932/Shift_JIS \(invalid byte at offset {cp932}\)",
    ):
        decode(late)


@pytest.mark.parametrize(
    ("family", "column", "cell", "field", "rule"),
    [
        (
            "registration",
            "生年月日",
            "0001-01-01",
            "personal.birth_date",
            "must lie in 1900-01-01 .. 2099-12-31",
        ),
        (
            "registration",
            "生年月日",
            "9999-12-31",
            "personal.birth_date",
            "must lie in 1900-01-01 .. 2099-12-31",
        ),
        ("registration", "生年月日", "1775001600", "personal.birth_date", "is not a date"),
        ("registration", "求職申込日", "1999-12-31", "registered_on", "must lie in 2000-01-01 .. 2099-12-31"),
        ("registration", "求職申込日", "2026-04-01T00:00:00", "registered_on", "is not a date"),
        ("consent", "署名日時", "1775001600", "captured.signed_at", "is not a date and time"),
        ("consent", "署名日時", "0001-01-01T00:00:00+23:59", "captured.signed_at", "must lie in 2000-01-01"),
        ("consent", "署名日時", "2026-04-01T09:00:00+09:00:30", "captured.signed_at", "RFC 3339"),
    ],
)
def test_forged_date_cells_are_refused_naming_column_and_rule(
    family: str, column: str, cell: str, field: str, rule: str
) -> None:
    """A file's date cells may be ISO or era dates, a time cell without an offset is Japan time; what they
    name must still be a plausible day or instant, spelt as the contract takes it once converted."""
    from contracts.envelope import Family
    from producers.submission import check

    data = factories.registration(PK).data if family == "registration" else factories.consent(PK).data
    (row,) = read_rows(family, _with_cell(family, data, column, cell))[2]
    errors = list(row.errors) or check(Family(family), row.data)
    assert isinstance(errors, list) and errors, "a forged cell was accepted"
    (error,) = [e for e in errors if e.field == field]
    assert rule in error.rule
    assert cell not in error.message and cell not in error.operator_rule


_BLANKISH = ["", " ", "\t", "\u3000", "x", " 1301 ", "\u3000x"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_BLANKISH), max_size=4), max_size=12), st.integers(1, 5))
def test_fuzz_blank_rows_are_skipped_and_every_other_row_read_at_its_line(
    rows: list[list[str]], chunk_rows: int
) -> None:
    """A row whose cells are all empty or blank (any Unicode space) is skipped; every other row is read,
    at the line it starts on, as the rule reads (``not "".join(cells).isspace() and any(cells)``)."""
    import csv

    from infra.codecs.csv_rows import read_chunks

    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    header = [c.en for c in COLUMNS["retention"]]
    writer.writerow(header)
    for cells in rows:
        writer.writerow(cells)
    text = out.getvalue()
    expected = []
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    start = reader.line_num + 1
    for cells in reader:
        if not "".join(cells).isspace() and any(cells):
            expected.append(start)
        start = reader.line_num + 1
    reading = read_chunks("retention", text.encode(), chunk_rows=chunk_rows)
    assert [row.line for parsed, _ in reading.chunks for row in parsed] == expected
