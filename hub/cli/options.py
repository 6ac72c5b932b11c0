"""Numbers on the command line, parsed as strictly as any other input from outside.

click's ``int`` and ``float`` types call Python's ``int()`` / ``float()``, which read full-width ``９`` as 9
(so ``--workers ９`` started nine workers) and take ``nan`` and ``inf`` for floats, which pass every range
check. The rule everywhere else in the hub is to refuse such input, never to normalise it (P1). So every
numeric option and argument of ``hub`` is declared here: ASCII digits only, bounds checked, and the error
names the option and the rule, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

import typer

MAX_WORKERS = 64  # a typo's 10**6 would take the host down before any other check
_MAX_DIGITS = 18  # Python refuses to read more than 4,300 digits with an exception of its own
_SIGNED = re.compile(r"-?[0-9]{1,18}", re.ASCII)
_UNSIGNED = re.compile(r"[0-9]{1,18}", re.ASCII)
_DECIMAL = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?", re.ASCII)


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"from {lo} to {hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def whole_number(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    """A parser for ``typer`` (``parser=``): an integer in ASCII digits (a minus sign only when ``lo`` is
    negative or absent) within ``lo``..``hi``."""
    shape = _SIGNED if lo is None or lo < 0 else _UNSIGNED

    def parse(text: Any) -> int:
        if isinstance(text, int):  # the declared default, not typed by anyone
            return text
        if not shape.fullmatch(str(text)):
            raise typer.BadParameter(f"expected up to {_MAX_DIGITS} ASCII digits 0-9")
        value = int(text)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise typer.BadParameter(f"expected a whole number {_bounds(lo, hi)}")
        return value

    return parse


def decimal_number(lo: float | None = None, hi: float | None = None) -> Callable[[Any], float]:
    """A parser for a non-negative decimal (``0.4``, ``12``) in ASCII digits: no sign, exponent, ``nan``
    or ``inf``; within ``lo``..``hi``."""

    def parse(text: Any) -> float:
        if isinstance(text, float | int):
            return float(text)
        if not _DECIMAL.fullmatch(str(text)):
            raise typer.BadParameter("expected a decimal number in ASCII digits 0-9 (e.g. 0.4)")
        value = float(text)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise typer.BadParameter(f"expected a number {_bounds(lo, hi)}")
        return value

    return parse


def _help(text: str | None, lo: float | None, hi: float | None) -> str | None:
    if lo is None and hi is None:
        return text
    return f"{text or ''} ({_bounds(lo, hi)})".strip()


def whole_option(*decls: str, lo: int | None = None, hi: int | None = None, help: str | None = None) -> Any:
    return typer.Option(*decls, parser=whole_number(lo, hi), metavar="INTEGER", help=_help(help, lo, hi))


def decimal_option(
    *decls: str, lo: float | None = None, hi: float | None = None, help: str | None = None
) -> Any:
    return typer.Option(*decls, parser=decimal_number(lo, hi), metavar="NUMBER", help=_help(help, lo, hi))


def whole_argument(lo: int | None = None, hi: int | None = None, help: str | None = None) -> Any:
    return typer.Argument(parser=whole_number(lo, hi), metavar="INTEGER", help=_help(help, lo, hi))


ConsumerWorkers = Annotated[
    int,
    whole_option(
        "--workers",
        lo=1,
        hi=MAX_WORKERS,
        help="Processes in the consumer group (the partitions are spread over them; at most one each)",
    ),
]
AdapterWorkers = Annotated[
    int,
    whole_option(
        "--workers",
        lo=1,
        hi=MAX_WORKERS,
        help="Processes serving the port (one listening socket; the first also runs the outbox relay)",
    ),
]
FiscalYear = Annotated[int, whole_option("--fy", lo=2011, hi=2100, help="Fiscal year (年度), April to March")]
Seed = Annotated[int, whole_option("--seed", help="Random seed: the same seed gives the same stream")]
Revision = Annotated[int | None, whole_option("--revision", lo=1, help="A revision (default: the latest)")]
