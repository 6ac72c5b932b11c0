"""Every numeric option and argument of ``hub`` takes ASCII digits only, and refuses anything else before
the command runs, naming the option, never echoing the value.

click reads full-width ``９`` as 9 (``--workers ９`` started nine workers) and takes ``nan`` and ``inf`` for
floats. The commands' bodies are replaced here by a probe, so a parameter that wrongly accepts the value
runs nothing real (no service starts, no stack is touched).
"""

from __future__ import annotations

from typing import Any

import pytest
import typer
import typer.testing
from typer.testing import CliRunner

from hub.cli import app
from hub.cli.options import decimal_number, whole_number

HOSTILE = ["９", "2０25", "٣", "nan", "-inf", "1e3", " 7", "1_0", "7" * 40]


def _leaves(command: Any, path: list[str], ctx: Any) -> Any:
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            yield from _leaves(command.get_command(ctx, name), [*path, name], ctx)
    else:
        yield path, command


def _numeric() -> list[tuple[list[str], str, bool]]:
    root = typer.main.get_command(app)
    found = []
    for path, command in _leaves(root, [], typer.Context(root)):
        for param in command.params:
            if param.type_descriptor.annotation in (int, float):
                option = param.param_type_name == "option"
                found.append((path, param.opts[0] if option else param.name, option))
    return found


NUMERIC = _numeric()


def test_the_numeric_parameters_are_all_found() -> None:
    names = {(" ".join(path), decl) for path, decl, _ in NUMERIC}
    assert {("run event-log", "--workers"), ("feed rollup", "--fy"), ("targets set", "--value")} <= names
    assert ("stack node kill", "n") in names and ("run console", "--port") in names
    assert len(NUMERIC) >= 25


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize(
    ("path", "decl", "option"), NUMERIC, ids=[f"{' '.join(p)} {d}" for p, d, _ in NUMERIC]
)
def test_every_numeric_parameter_refuses_anything_but_ascii_digits(
    path: list[str], decl: str, option: bool, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = typer.main.get_command(app)
    ran: list[list[str]] = []
    for leaf_path, command in _leaves(root, [], typer.Context(root)):
        command.callback = lambda *_a, _p=leaf_path, **_k: ran.append(_p)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: root)

    result = CliRunner().invoke(app, [*path, decl, text] if option else [*path, "--", text])

    assert ran == [], result.output
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output
    if not text.isascii() or len(text) > 20:
        assert text not in result.output  # the value is never echoed


def test_the_parsers_take_ascii_digits_within_bounds() -> None:
    assert whole_number(2011, 2100)("2025") == 2025
    assert whole_number()("-3") == -3
    assert decimal_number(0.0)("0.4") == 0.4
    assert decimal_number(0.0)("12") == 12.0
    for text in ["2010", "2101", "-2025"]:
        with pytest.raises(typer.BadParameter) as refused:
            whole_number(2011, 2100)(text)
        assert text not in str(refused.value)
    with pytest.raises(typer.BadParameter):
        whole_number(1)("-1")
