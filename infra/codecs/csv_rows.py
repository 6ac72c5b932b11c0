"""Reading batch files as government systems exchange them: encoding, header, rows to submission data.

Files come in UTF-8 (with or without BOM) or CP932 (Microsoft's Shift_JIS), with CRLF or LF line ends.
UTF-8 is tried strictly first: CP932 bytes are almost never valid UTF-8, while the reverse guess would
mangle UTF-8 silently, and only UTF-8 can hold characters such as 髙 and 𠮷 that CP932 lacks.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, BinaryIO, NamedTuple

from domain.calendar import JST, DateFormatError, parse_date
from infra.codecs.csv_columns import COLUMNS, Column, Kind
from infra.codecs.field_errors import FieldError

_LIST_SEPARATORS = re.compile(r"[;；、]")
_TRUE = frozenset({"true", "1", "yes", "y", "はい", "有", "あり", "○", "◯"})
_FALSE = frozenset({"false", "0", "no", "n", "いいえ", "無", "なし", "×"})
_RECIPIENT_KINDS = {"authority": "authority", "自治体": "authority", "office": "office", "安定所": "office"}
_MONTHS_SUFFIX = re.compile(r"(か月|ヶ月|カ月|ケ月|months?)$")


class FileError(ValueError):
    """The file as a whole cannot be read (encoding, header); no row is imported."""


# Defaults of the file limits (``Settings.max_file_rows`` / ``max_file_columns`` in the adapters). A
# cell is at most ``csv.field_size_limit()`` (131,072 characters); a longer one is a FileError.
MAX_ROWS = 200_000
MAX_COLUMNS = 64
_MAX_PROBLEMS = 5


class ParsedRow(NamedTuple):
    """(A named tuple: one is made per row, and a frozen dataclass sets each field through
    ``object.__setattr__``.)"""

    line: int  # physical line where the record starts (the header is line 1)
    data: dict[str, Any]
    errors: tuple[FieldError, ...]


class _Cells(NamedTuple):
    """How one column's cells are read, worked out once per file (``Header.plan``)."""

    column: Column
    label: str
    convert: Callable[[str], Any]
    path: tuple[str, ...]
    # The column's conversions remembered for the file (``_cells``), or None (personal columns, and those
    # whose cells rarely repeat); ``copied``: its values are lists, handed out as fresh copies.
    seen: dict[str, Any] | None
    copied: bool
    ascii_trimmed: bool  # ``convert`` is ``_norm_fast``: an ASCII cell is only trimmed (no call)


@dataclass(frozen=True, slots=True)
class Header:
    columns: tuple[Column, ...]  # one per cell of the header row
    labels: tuple[str, ...]  # as written in the file, for messages
    # (path, when, value) of the family's columns with ``Column.none_when``, in the file or not
    none_when: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = ()
    # Per cell: how its column is read, worked out once per file rather than once per cell.
    plan: tuple[_Cells, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plan = tuple(_cells(column, label) for column, label in zip(self.columns, self.labels, strict=False))
        object.__setattr__(self, "plan", plan)

    def label_for(self, loc: tuple[int | str, ...]) -> str | None:
        """The header label whose column holds the longest prefix of a contract field location."""
        best: tuple[int, str] | None = None
        for column, label in zip(self.columns, self.labels, strict=True):
            n = len(column.path)
            if tuple(loc[:n]) == column.path and (best is None or n > best[0]):
                best = (n, label)
        return best[1] if best else None


_BLOCK = 1 << 20  # bytes read at a time: a file is never held in memory whole


def _first_error(source: BinaryIO, encoding: str) -> tuple[int | None, int]:
    """Where ``source`` stops being ``encoding`` (the offset ``bytes.decode`` would name, or None), and
    how many line feeds it holds; read a block at a time and decoded incrementally (an invalid byte is
    found at the same offset as decoding the whole file finds it)."""
    source.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    consumed = lines = 0
    while block := source.read(_BLOCK):
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(block)
        except UnicodeDecodeError as exc:
            return consumed - pending + exc.start, lines
        consumed += len(block)
        lines += block.count(b"\n")
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return consumed - pending + exc.start, lines
    return None, lines


def encoding_of(source: BinaryIO) -> tuple[str, int]:
    """The file's encoding (``utf-8``, BOM or not, else ``cp932``) and its line feeds, read a block at a
    time; ``source`` is left at its start. Raises FileError naming the offset of the first invalid byte
    in each."""
    utf8_error, lines = _first_error(source, "utf-8")
    if utf8_error is None:
        source.seek(0)
        return "utf-8", lines
    source.seek(0)
    if source.read(3) == codecs.BOM_UTF8:
        utf8_error -= 3  # counted after the BOM, as decoding with utf-8-sig counts
    cp932_error, _ = _first_error(source, "cp932")
    if cp932_error is None:
        source.seek(0)
        return "cp932", lines
    raise FileError(
        f"file is neither UTF-8 (invalid byte at offset {utf8_error}) nor CP932/Shift_JIS "
        f"(invalid byte at offset {cp932_error})"
    )


def decode(content: bytes) -> tuple[str, str]:
    """Return (text, encoding name) of a whole file in memory (tests; imports read a stream)."""
    encoding, _ = encoding_of(io.BytesIO(content))
    return content.decode("utf-8-sig" if encoding == "utf-8" else encoding), encoding


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def read_header(family: str, cells: list[str], *, max_columns: int = MAX_COLUMNS) -> Header:
    table = COLUMNS[family]
    if len(cells) > max_columns:
        raise FileError(
            f"header (line 1): {len(cells)} columns; a {family} file has at most {max_columns} "
            f"(limit) and {len(table)} known columns"
        )
    by_name: dict[str, Column] = {}
    for column in table:
        by_name[column.en.lower()] = column
        by_name[_norm(column.ja)] = column
    columns: list[Column] = []
    problems: list[str] = []
    for i, cell in enumerate(cells, start=1):
        found = by_name.get(_norm(cell).lower()) or by_name.get(_norm(cell))
        if found is None:
            problems.append(f"column {i} is not a {family} column")
        elif found in columns:
            problems.append(f"column {i} repeats column {found.en} ({found.ja})")
        else:
            columns.append(found)
    missing = [f"{c.en} ({c.ja})" for c in table if c.required and c not in columns]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    if problems:
        known = ", ".join(f"{c.en}/{c.ja}" for c in table)
        more = len(problems) - _MAX_PROBLEMS
        listed = "; ".join(problems[:_MAX_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
        raise FileError(f"header (line 1): {listed}. Known {family} columns: {known}")
    none_when = tuple((c.path, *c.none_when) for c in table if c.none_when is not None)
    return Header(tuple(columns), tuple(cells), none_when)


def _norm_fast(text: str) -> str:
    """``_norm`` without the Unicode machinery for ASCII, which NFKC leaves as it is."""
    return text.strip() if text.isascii() else _norm(text)


def _iso_or_other_date(value: str) -> str:
    """``parse_date(value).isoformat()``, with a shortcut for plain ISO dates (2024-04-01)."""
    if len(value) == 10 and value[4] == "-" and value[7] == "-" and value.isascii():
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass  # not a real date, or not ISO after all: parse_date says what is wrong
    return parse_date(value).isoformat()


_MEMO_CELLS = 4096  # distinct cells remembered per column and file


def _cells(column: Column, label: str) -> _Cells:
    """What ``_convert`` does for this column, specialised for the common kinds (the same results), and
    its memory of the file's cells."""
    convert, repeats = _specialised(column)
    # A file repeats its dates, enum labels and attribute lists on every row, and an era date or NFKC
    # costs more than the lookup. Bounded, and gone with the file's header. Never for a personal column:
    # a birth date is a date cell too, and 4,096 of them would stay in memory for the whole import.
    # Immutable results only: a list is handed out as a fresh copy (``parse_chunk``).
    seen: dict[str, Any] | None = {} if repeats and not column.personal else None
    copied = column.kind in (Kind.LIST, Kind.RECIPIENTS)
    return _Cells(column, label, convert, column.path, seen, copied, convert is _norm_fast)


def _specialised(column: Column) -> tuple[Callable[[str], Any], bool]:
    """The conversion, and whether the column's cells repeat enough to remember them."""
    if column.kind is Kind.TEXT:
        return str.strip, False
    if column.kind is Kind.CODE:
        synonyms = column.synonyms
        if not synonyms:
            return _norm_fast, False

        def code(cell: str) -> str:
            value = _norm_fast(cell)
            return synonyms.get(value.replace("・", ""), value)

        return code, True
    if column.kind is Kind.DATE:
        return lambda cell: _iso_or_other_date(_norm_fast(cell)), True
    if column.kind in (Kind.LIST, Kind.BOOL):
        return lambda cell: _convert(column, cell), True
    return lambda cell: _convert(column, cell), False


def _convert(column: Column, cell: str) -> Any:
    if column.kind is Kind.TEXT:
        return cell.strip()
    value = _norm(cell)
    if column.kind is Kind.CODE:
        return column.synonyms.get(value.replace("・", ""), value)
    if column.kind is Kind.DATE:
        return parse_date(value).isoformat()
    if column.kind is Kind.DATETIME:
        return _datetime(value)
    if column.kind is Kind.INT:
        digits = _MONTHS_SUFFIX.sub("", value)
        if not (digits.isascii() and digits.isdigit()):  # str.isdigit() is true of ٣ and ²
            raise ValueError("is not a whole number")
        return int(digits)
    if column.kind is Kind.BOOL:
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("is not yes/no: expected true/false, 1/0, はい/いいえ or ○/×")
    if column.kind is Kind.LIST:
        items = [i.strip() for i in _LIST_SEPARATORS.split(value) if i.strip()]
        return [column.synonyms.get(i, i) for i in items]
    return _recipients(value)


def _datetime(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(parse_date(value), time())
        except DateFormatError:
            raise ValueError(
                "is not a date and time: expected ISO 8601 (2025-04-03T10:00:00+09:00) or a date"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=JST)  # government systems write Japan time without an offset
    return parsed.isoformat()


def _recipients(value: str) -> list[dict[str, str]]:
    result = []
    for item in _LIST_SEPARATORS.split(value):
        if not item.strip():
            continue
        kind, sep, code = item.partition(":")
        if not sep or kind.strip() not in _RECIPIENT_KINDS:
            raise ValueError("is not a recipient: expected authority:<code> or office:<code>")
        result.append({"kind": _RECIPIENT_KINDS[kind.strip()], "code": code.strip()})
    return result


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def parse_chunk(header: Header, raw: list[tuple[int, list[str]]]) -> list[ParsedRow]:
    """Rows (line, cells) to submission data, converted column by column: one column's converter (and its
    memory of cells seen) runs over every row of the chunk before the next column's. The loop over a
    column's cells is written out here (a remembered cell is a dict lookup, an ASCII code is trimmed,
    a nested field goes into its parent without a call): it runs for every cell of the file."""
    width = len(header.columns)
    fit = [cells for _, cells in raw if len(cells) == width]
    datas: list[dict[str, Any]] = [{} for _ in fit]
    errors: dict[int, list[FieldError]] = {}
    for (column, label, convert, path, seen, copied, trimmed), column_cells in zip(
        header.plan, zip(*fit, strict=True), strict=False
    ):
        if len(path) == 1:
            parent, key = None, path[0]
        elif len(path) == 2:
            parent, key = path[0], path[1]
        else:  # deeper (no column is, today): through _put
            parent, key = "", ""
        for j, cell in enumerate(column_cells):
            if seen is not None and (value := seen.get(cell, seen)) is not seen:
                if copied:
                    value = list(value)
            elif not cell or cell.isspace():
                continue  # empty = absent; the contract says whether that is allowed
            elif trimmed and cell.isascii():
                value = cell.strip()  # what NFKC and a trim give an ASCII cell (_norm_fast)
            else:
                try:
                    value = convert(cell)
                except ValueError as exc:  # not remembered: raised each time
                    errors.setdefault(j, []).append(
                        FieldError(
                            field=".".join(column.path),
                            rule=str(exc),
                            value=cell,
                            rule_class=f"{column.kind.value} format",
                            label=label,
                        )
                    )
                    continue
                if seen is not None and len(seen) < _MEMO_CELLS:
                    seen[cell] = value
                    if copied:
                        value = list(value)
            if parent is None:
                datas[j][key] = value
            elif parent:
                data = datas[j]
                inner = data.get(parent)
                if inner is None:
                    inner = data[parent] = {}
                inner[key] = value
            else:
                _put(datas[j], path, value)
    for path, when, value in header.none_when:
        for data in datas:
            if _get(data, when) == value and _get(data, path) is None:
                _put(data, path, [])  # an empty cell, on a row that needs no such list: none
    parsed: list[ParsedRow] = []
    j = 0
    for line, cells in raw:
        if len(cells) != width:
            refusal = FieldError(
                field="(row)",
                rule=f"has {len(cells)} cells, the header has {width}",
                rule_class="cell count",
            )
            parsed.append(ParsedRow(line, {}, (refusal,)))
            continue
        row_errors = errors.get(j)
        parsed.append(ParsedRow(line, {} if row_errors else datas[j], tuple(row_errors or ())))
        j += 1
    return parsed


Chunk = tuple[list[ParsedRow], FileError | None]


class Reading(NamedTuple):
    encoding: str
    lines: int  # line feeds in the file (for progress)
    header: Header
    chunks: Iterator[Chunk]


def read_chunks(
    family: str,
    source: BinaryIO | bytes,
    *,
    chunk_rows: int,
    max_rows: int = MAX_ROWS,
    max_columns: int = MAX_COLUMNS,
) -> Reading:
    """Read ``source`` (a seekable binary file, read a block at a time) as a batch file of ``family``.
    Its chunks hold up to ``chunk_rows`` rows each and, in the last one, the FileError that stopped the
    reading (a broken record, a row past ``max_rows``): the rows before it are read. Raises FileError for
    the file as a whole (encoding, header)."""
    if family not in COLUMNS:
        raise FileError(f"unknown family {family!r}; expected one of {', '.join(COLUMNS)}")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    encoding, lines = encoding_of(source)
    text = io.TextIOWrapper(source, encoding="utf-8-sig" if encoding == "utf-8" else encoding, newline="")
    reader = csv.reader(text)
    try:
        first = next(reader)
    except StopIteration:
        raise FileError("file is empty: expected a header row") from None
    except csv.Error as exc:  # e.g. a cell past csv.field_size_limit(): a 1 MB header line
        raise FileError(f"header (line 1): not readable as CSV ({exc})") from None
    header = read_header(family, first, max_columns=max_columns)

    def chunks() -> Iterator[Chunk]:
        start = reader.line_num + 1
        count = 0
        raw: list[tuple[int, list[str]]] = []
        error: FileError | None = None
        try:
            for cells in reader:
                # A row is read unless every cell is empty or blank: most show it by their first cell.
                if (cells and (first := cells[0]) and not first.isspace()) or (
                    not "".join(cells).isspace() and any(cells)
                ):
                    count += 1
                    if count > max_rows:
                        error = FileError(
                            f"line {start}: a file holds at most {max_rows} rows (limit); rows from this "
                            "line on were not read (send them in another file)"
                        )
                        break
                    if len(cells) > max_columns:
                        cells = cells[: max_columns + 1]  # already too many: the row is refused as it is
                    raw.append((start, cells))
                    if len(raw) == chunk_rows:
                        yield parse_chunk(header, raw), None
                        raw = []
                start = reader.line_num + 1
        except csv.Error as exc:
            error = FileError(f"line {start}: not readable as CSV ({exc}); rows after it were not read")
        finally:
            text.detach()  # the caller's file stays open (closing it is the caller's)
        if raw or error is not None:
            yield parse_chunk(header, raw), error

    return Reading(encoding, lines, header, chunks())
