"""Log redaction is a last guard, so it must hold wherever a personal value could hide: nested under
another key, in a list, or in a standard-library logger's ``extra`` (uvicorn, aiokafka, asyncpg…)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from infra.config import Settings
from infra.logging import configure_logging, get_logger

NAME = "髙橋 花子"


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str], settings: Settings) -> Iterator[pytest.CaptureFixture[str]]:
    """Logging bound to the test's captured stderr (configured in the test itself: pytest swaps the
    stream between setup and call), and put back afterwards."""
    try:
        yield capsys
    finally:
        configure_logging(settings.log_level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    err = capsys.readouterr().err
    return [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_nested_personal_keys_are_redacted(logged: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    get_logger("hostile").warning(
        "rejected",
        body={"personal": {"name": NAME}, "rows": [{"employer_name": NAME}, {"case_number": "SJ-1"}]},
        name=NAME,
    )
    lines = _lines(logged)
    assert lines and lines[-1]["event"] == "rejected"
    text = orjson.dumps(lines).decode()
    assert NAME not in text and "SJ-1" not in text, text
    assert "[redacted]" in text


def test_standard_library_loggers_are_redacted(logged: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    logging.getLogger("asyncpg").warning(
        "request failed", extra={"employer_name": NAME, "detail": {"birth_date": "1988-06-01"}}
    )
    lines = _lines(logged)
    assert any(line.get("event") == "request failed" for line in lines), lines
    text = orjson.dumps(lines).decode()
    assert NAME not in text and "1988-06-01" not in text, text
