"""Differential fuzz: a record sent as one row of a batch file against the same record sent alone.

The single-event path validates a JSON body with the pydantic contract (``producers.submission.check``)
and builds its event (``build_event``); the batch import reads file bytes (encoding, quoting, line ends,
``infra.codecs.csv_rows.read_chunks``), converts the cells column by column (``parse_chunk``, with its
file-long memory of cells) and judges them with the ``contracts.wire`` structs, the personal block stood
in for by the constant placeholder (``FamilyRows``, ``wire.checked_struct(standing_in=…)``). For the same
record — personal texts of any printable or hostile characters (quotes, commas, line breaks, NUL, BOMs,
characters CP932 lacks, formula starts, past the fields' lengths), written as a client's CSV writer writes them, in UTF-8 with
or without a BOM or CP932, CRLF or LF, among other rows — the verdict must be the same: the same event,
byte for byte (sealed under the same nonce), or a refusal naming the same fields and rules.

(A file's cells are trimmed, and a blank cell is an absent field: texts here have no surrounding white
space and are never empty, so the two paths are given the same record; a cell past the CSV reader's
131,072 characters is a refusal of the file, not of a row.) Derandomized.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_case
from hypothesis import strategies as st

from contracts.envelope import Family, encode
from infra.codecs.csv_columns import COLUMNS
from infra.codecs.csv_rows import _get, read_chunks
from producers.adapters import csv_chunks
from producers.adapters.csv_chunks import FamilyRows, seal_rows
from producers.submission import build_event, check, seal_checked
from tests import factories

PK = "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"
KEY = bytes(range(32))
SOURCE = "/hellowork/offices/1301"

_TEXTS = {  # the personal texts of each family, as the contract names them
    Family.REGISTRATION: ["name", "name_kana", "phone", "email", "address"],
    Family.REFERRAL: ["case_number"],
    Family.PLACEMENT: ["employer_name", "employer_address"],
}
_CHARACTERS = st.one_of(
    st.characters(codec="utf-8", exclude_categories=["Cs"]),
    st.sampled_from(
        list("髙𠮷ｱ①㈱，；、\"',;=+-@\t\r\n\x00\x1f\x7f\u3000\u00a0\u2028\ufeff\u2212－＝ア山田 ")
    ),
)
_TEXT = st.one_of(
    st.text(_CHARACTERS, min_size=1, max_size=40),
    st.sampled_from(["=1+1", "@SUM(A1)", "－1", "x" * 201, "山" * 300]),
).filter(lambda t: t == t.strip() and t != "")


def _record(family: Family) -> dict[str, Any]:
    made = {
        Family.REGISTRATION: factories.registration(PK, personal={"name": "x", "birth_date": "1988-06-01"}),
        Family.REFERRAL: factories.referral(PK),
        Family.PLACEMENT: factories.placement(PK),
    }[family]
    return dict(made.data)


@st.composite
def _records(draw: st.DrawFn) -> tuple[Family, dict[str, Any]]:
    family = draw(st.sampled_from(sorted(_TEXTS)))
    data = _record(family)
    personal = dict(data["personal"])
    for name in draw(st.lists(st.sampled_from(_TEXTS[family]), min_size=1, max_size=3, unique=True)):
        personal[name] = draw(_TEXT)
    data["personal"] = personal
    return family, data


def _cells(family: Family, data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The header and row a client writes for ``data`` (English names, lists joined with ';')."""
    header, row = [], []
    for column in COLUMNS[family.value]:
        value = _get(data, column.path)
        if value is None:
            continue
        header.append(column.en)
        if isinstance(value, bool):
            row.append("true" if value else "false")
        elif isinstance(value, list):
            row.append(";".join(value))
        else:
            row.append(str(value))
    return header, row


def _file(header: list[str], rows: list[list[str]], encoding: str, newline: str) -> bytes | None:
    out = io.StringIO(newline="")
    # Python's writer quotes a cell holding a character of its line terminator: with "\n" alone, a cell
    # holding a bare CR would go unquoted, and the file would say another row (what a reader must read).
    writer = csv.writer(
        out, lineterminator=newline, quoting=csv.QUOTE_MINIMAL if newline == "\r\n" else csv.QUOTE_ALL
    )
    writer.writerow(header)
    writer.writerows(rows)
    try:
        return out.getvalue().encode(encoding)
    except UnicodeEncodeError:
        return None  # CP932 lacks a character: such a file is UTF-8


def _as_a_row(family: Family, data: dict[str, Any], file: bytes, at: int) -> tuple[str, Any]:
    reading = read_chunks(family.value, file, chunk_rows=2)
    chunks = list(reading.chunks)
    assert all(error is None for _, error in chunks), chunks
    parsed = [row for rows, _ in chunks for row in rows]
    row = parsed[at]
    if row.errors:
        return "refused", sorted((e.field, e.rule) for e in row.errors)
    judged = FamilyRows(family).judge([(row.line, row.data, "k")], lambda f: None)
    if judged.bad:
        return "refused", sorted((e.field, e.rule) for _, e in judged.bad)
    (built,) = judged.rows
    (event,) = seal_rows(family, [built], [SOURCE], {built.subject: KEY})
    return "accepted", event


def _alone(family: Family, data: dict[str, Any]) -> tuple[str, Any]:
    checked = check(family, data)
    if isinstance(checked, list):
        return "refused", sorted((e.field, e.rule) for e in checked)
    return "accepted", build_event(checked, SOURCE, seal_checked(checked, KEY))


@settings(
    max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(
    _records(),
    st.sampled_from(["utf-8", "utf-8-sig", "cp932"]),
    st.sampled_from(["\r\n", "\n"]),
    st.integers(0, 2),
)
def test_fuzz_a_record_as_a_files_row_is_judged_as_the_record_alone(
    case: tuple[Family, dict[str, Any]], encoding: str, newline: str, at: int
) -> None:
    family, data = case
    header, row = _cells(family, data)
    _, other = _cells(family, _record(family))  # valid rows around it: the file's memory of cells
    rows = [other] * at + [row] + [other] * (2 - at)
    file = _file(header, rows, encoding, newline)
    if file is None:
        note_case("CP932 lacks a character")
        return
    with pytest.MonkeyPatch.context() as monkeypatch:  # one nonce for both: then one event, byte for byte
        monkeypatch.setattr(csv_chunks.os, "urandom", lambda n: bytes(n))
        monkeypatch.setattr("infra.crypto.os.urandom", lambda n: bytes(n))
        imported, alone = _as_a_row(family, data, file, at), _alone(family, data)
    note_case(f"{family.value} {alone[0]}")
    assert imported[0] == alone[0], (imported, alone)
    if alone[0] == "refused":
        assert imported[1] == alone[1]
    else:
        event = imported[1]
        assert encode(event) == encode(alone[1]._replace(id=event.id, time=event.time))
