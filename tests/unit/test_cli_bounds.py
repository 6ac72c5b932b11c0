"""The CLI's worker counts are refused before anything starts when out of range or not ASCII digits."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hub.cli import app
from infra import runner


@pytest.mark.parametrize("service", ["event-log", "welfare-adapter", "employment-adapter"])
@pytest.mark.parametrize("workers", ["0", "65", "100000", "９", "-1", "2x"])
def test_workers_out_of_bounds_are_refused_before_any_process_starts(
    service: str, workers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def started(*_a: object, **_k: object) -> None:
        raise AssertionError("a service started")

    monkeypatch.setattr(runner, "run_forever", started)
    monkeypatch.setattr("producers.adapters.serve.run", started)
    monkeypatch.setattr("producers.adapters.serve.run_workers", started)
    result = CliRunner().invoke(app, ["run", service, "--workers", workers])
    assert result.exit_code == 2, result.output
    assert "９" not in result.output and "100000" not in result.output
