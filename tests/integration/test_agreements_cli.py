"""``hub agreements add|list|end`` against the test database, as an operator runs them."""

from __future__ import annotations

import re

import asyncpg
from typer.testing import CliRunner

from hub.cli import app

runner = CliRunner()


def test_an_agreement_is_added_listed_and_ended(pool: asyncpg.Pool) -> None:
    # 122041 (Funabashi): an authority no test streams for, so no feed changes with it.
    base = ["agreements", "add", "--authority", "122041", "--office", "1205", "--from", "2024-04-01"]
    added = runner.invoke(app, [*base, "--purpose", "disclose_placement", "--title", "協定 CLI"])
    assert added.exit_code == 0, added.output
    agreement_id = re.search(r"agreement (agr-[0-9a-f]+)", added.output)[1]  # type: ignore[index]
    assert agreement_id in runner.invoke(app, ["agreements", "list"]).output

    refused = {
        "unknown purpose": [*base, "--purpose", "marketing"],
        "bad check digit": [*base[:3], "122042", *base[4:], "--purpose", "disclose_placement"],
        "bad date": [*base[:-1], "2024-02-30", "--purpose", "disclose_placement"],
        # One spelling, the programme's years (fromisoformat read these as days)
        "compact date": [*base[:-1], "20240401", "--purpose", "disclose_placement"],
        "week date": [*base[:-1], "2024-W14-1", "--purpose", "disclose_placement"],
        "year 0001": [*base[:-1], "0001-04-01", "--purpose", "disclose_placement"],
        "until year 9999": [*base, "--until", "9999-12-31", "--purpose", "disclose_placement"],
    }
    for why, args in refused.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and not isinstance(result.exception, ValueError), (why, result.output)

    assert runner.invoke(app, ["agreements", "end", agreement_id, "--on", "2025-03-31"]).exit_code == 0
    assert runner.invoke(app, ["agreements", "end", "agr-000000000000"]).exit_code == 1
    forged = runner.invoke(app, ["agreements", "end", agreement_id, "--on", "２０２５-03-31"])
    assert forged.exit_code == 2, forged.output  # full-width digits: a specific refusal, not a traceback
