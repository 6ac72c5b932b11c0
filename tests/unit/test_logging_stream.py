"""A log line is written to whatever stderr is now: the stream seen when logging was configured may
have been closed since (a test's capture, a daemon's reopened stream), and logging must not raise then —
in a request it turned a refusal into a 500."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from infra.logging import configure_logging, get_logger


def test_a_stream_closed_after_configuration_breaks_no_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    first, now = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO")
    try:
        get_logger("adapters").warning("refused", rule="P2")  # first use: structlog caches the logger
        first.close()
        monkeypatch.setattr(sys, "stderr", now)
        get_logger("adapters").warning("refused", rule="P3")
        logging.getLogger("uvicorn.error").warning("stdlib line")
    finally:
        monkeypatch.undo()
        configure_logging("WARNING")
    assert '"rule": "P3"' in now.getvalue()
    assert "stdlib line" in now.getvalue()
