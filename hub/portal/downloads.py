"""Downloads of a feed revision: CSV (UTF-8, or CP932 with CRLF for Excel) and an Excel workbook.

The rows are the feed's own (``consumers.feed.delivery``), so the portal's files say exactly what
``hub feed export`` and the feed API say. In the workbook, counts are numbers (Excel sums them) and
every text cell is stored as text, never as a formula: a name a client sent that starts with ``=``
stays a name.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Literal

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, TYPE_STRING
from openpyxl.styles import Font

from consumers.feed.delivery import Delivery, Encoding, aggregates_rows, individual_rows, to_csv

Part = Literal["aggregates", "individuals"]
Format = Literal["csv", "xlsx"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SHEETS = {"aggregates": "集計", "individuals": "個人一覧"}


def rows_of(delivery: Delivery, part: Part) -> list[list[str]]:
    return aggregates_rows(delivery.body) if part == "aggregates" else individual_rows(delivery)


def csv_file(delivery: Delivery, part: Part, encoding: Encoding) -> tuple[bytes, int]:
    return to_csv(rows_of(delivery, part), encoding)


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def xlsx_file(delivery: Delivery, part: Part, *, numeric_columns: Sequence[str] = ("値",)) -> bytes:
    rows = rows_of(delivery, part)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = SHEETS[part]
    header, body = rows[0], rows[1:]
    sheet.append(header)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    numeric = {i for i, name in enumerate(header) if name in numeric_columns}
    for r, row in enumerate(body, start=2):
        for c, text in enumerate(row, start=1):
            value = _number(text) if (c - 1) in numeric and text else None
            safe = ILLEGAL_CHARACTERS_RE.sub("〓", text)  # control characters a sheet cannot hold
            cell = sheet.cell(row=r, column=c, value=value if value is not None else safe)
            if value is None:
                cell.data_type = TYPE_STRING  # text stays text: never a formula
    sheet.freeze_panes = "A2"
    for column in sheet.columns:
        width = max((len(str(c.value or "")) for c in column), default=8)
        sheet.column_dimensions[column[0].column_letter].width = min(max(width * 1.6, 8), 50)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
