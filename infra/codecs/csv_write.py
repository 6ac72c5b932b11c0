"""Writing batch files the way client systems do (for the demo, tests and benchmarks): the inverse of
``csv_rows``, with a choice of Japanese or English headers, era or ISO dates, and CP932 or UTF-8."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from infra.codecs.csv_columns import COLUMNS, Column, Kind


def era_short(d: date) -> str:
    """R6.4.1 style (令和 from 2019-05-01, 平成 before); ISO before 平成."""
    if d >= date(2019, 5, 1):
        return f"R{d.year - 2018}.{d.month}.{d.day}"
    if d >= date(1989, 1, 8):
        return f"H{d.year - 1988}.{d.month}.{d.day}"
    return d.isoformat()


def _get(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _cell(column: Column, value: Any, era: bool) -> str:
    if value is None:
        return ""
    if column.kind is Kind.DATE and era:
        try:
            return era_short(date.fromisoformat(value))
        except ValueError:
            return str(value)  # already written some other way (tests write broken dates on purpose)
    if column.kind is Kind.BOOL:
        return "1" if value else "0"
    if column.kind is Kind.LIST:
        return ";".join(value)
    if column.kind is Kind.RECIPIENTS:
        return ";".join(f"{r['kind']}:{r['code']}" for r in value)
    return str(value)


def write_csv(
    family: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    japanese: bool = True,
    era: bool = False,
    encoding: str = "utf-8",
    crlf: bool = True,
) -> bytes:
    columns = COLUMNS[family]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n")
    writer.writerow([c.ja if japanese else c.en for c in columns])
    for data in rows:
        writer.writerow([_cell(c, _get(data, c.path), era) for c in columns])
    return buffer.getvalue().encode(encoding)


# A cell that starts like a formula is run by Excel and its kin when an authority opens the export
# (=HYPERLINK(…) as an employer's name): such cells get a leading apostrophe, which spreadsheets show as
# text and do not display (OWASP "CSV injection"). Plain numbers ("-3", "+1.5") are left as they are.
# The full-width signs too: Japanese Excel reads ＝ ＋ － ＠ starting a cell as = + - @ (how a formula is typed
# in full-width input mode), and the CP932 exports are opened there. And U+2212 MINUS SIGN, which CP932
# writes as the bytes of － (0x817C): what Excel reads from the file is －.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠", "\u2212")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def safe_cell(value: str) -> str:
    if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_rows(rows: Iterable[Sequence[str]]) -> list[list[str]]:
    """Rows for an export that people open in a spreadsheet: every cell through ``safe_cell``."""
    return [[safe_cell(cell) for cell in row] for row in rows]
