"""Digits from outside are ASCII (P1): Python's ``\\d`` on str, ``str.isdigit()``, ``int()`` and ``float()``
take any script's digits (٢٠٢٤, ২০২৪), superscripts (² passes ``isdigit`` and fails ``int``), ``inf`` and
``nan``. Full-width digits in dates and CSV cells are folded on purpose (NFKC: how scanned and hand-typed
forms write them); nothing else is read as a number.
"""

from __future__ import annotations

import datetime as dt

import pytest
from starlette.requests import Request

from consumers.monitoring.deadletters import _ascii_number
from contracts.events import Sealed
from domain.calendar import DateFormatError, parse_date, parse_month
from domain.monitoring import HIDDEN, safe_headers
from hub.web.i18n import negotiate
from infra.codecs.csv_columns import COLUMNS
from infra.codecs.csv_rows import _convert
from infra.codecs.csv_write import safe_cell


@pytest.mark.parametrize("text", ["٢٠٢٤-٠٤-٠١", "২০২৪-০৪-০১", "令和٦年٤月١日", "R٦.٤.١", "٢٠٢٤年4月1日"])
def test_a_date_in_another_scripts_digits_is_refused(text: str) -> None:
    with pytest.raises(DateFormatError):
        parse_date(text)


def test_full_width_dates_are_still_read() -> None:
    assert parse_date("２０２４-０４-０１") == dt.date(2024, 4, 1)
    assert parse_date("令和６年４月１日") == dt.date(2024, 4, 1)


def test_a_month_in_another_scripts_digits_is_refused() -> None:
    with pytest.raises(DateFormatError):
        parse_month("٢٠٢٥-٠٤")


@pytest.mark.parametrize("cell", ["٣", "১", "𐩀", "3٣"])
def test_a_csv_whole_number_is_ascii(cell: str) -> None:
    column = next(c for c in COLUMNS["retention"] if c.en == "checkpoint_months")
    assert _convert(column, "3") == 3
    with pytest.raises(ValueError):
        _convert(column, cell)


def test_a_negative_number_in_another_script_is_not_left_as_a_formula() -> None:
    assert safe_cell("-3") == "-3"
    assert safe_cell("-٣") == "'-٣"


def test_a_dead_letters_time_header_in_another_script_is_hidden() -> None:
    shown = safe_headers([("ce_time", "٢٠٢٥-٠١-٠١T00:00:00Z".encode()), ("ce_specversion", "١.٠".encode())])
    assert shown == {"ce_time": HIDDEN, "ce_specversion": HIDDEN}


@pytest.mark.parametrize("text", ["²", "٣", "１", "", "9" * 20, None])
def test_a_dead_letters_position_header_is_ascii_digits(text: str | None) -> None:
    assert not _ascii_number(text)
    assert _ascii_number("42")


def test_a_data_key_id_is_ascii() -> None:
    block = {"alg": "A256GCM", "kid": f"pdk-{'a' * 32}-١", "nonce": "AAAAAAAAAAAAAAAA", "ct": "AAAA"}
    with pytest.raises(ValueError, match="kid"):
        Sealed.model_validate(block)


def _request(accept_language: str) -> Request:
    return Request({"type": "http", "headers": [(b"accept-language", accept_language.encode())]})


@pytest.mark.parametrize("q", ["inf", "nan", "１", "1e3", "2", "-1"])
def test_a_language_preference_is_a_qvalue(q: str) -> None:
    """``ja;q=inf`` is no preference at all (RFC 9110 qvalue: 0 to 1, three decimals at most)."""
    assert negotiate(_request(f"ja;q={q}, en;q=0.5"), None) == "en"
    assert negotiate(_request("ja;q=0.9, en;q=0.5"), None) == "ja"
