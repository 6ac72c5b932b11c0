"""Options several commands share, parsed as strictly as any other input from outside."""

from __future__ import annotations

from typing import Annotated, Any

import typer

MAX_WORKERS = 64  # a typo's 10**6 would take the host down before any other check


def _workers(text: str) -> int:
    """1 to ``MAX_WORKERS``, in ASCII digits only: click's ``int()`` reads full-width ``９`` as 9, and the
    rule everywhere else in the hub is to refuse such digits, never to normalise them (P1)."""
    if isinstance(text, int):  # the default, not typed by anyone
        return text
    if not (text.isascii() and text.isdigit()):
        raise typer.BadParameter("expected ASCII digits 0-9")
    if not 1 <= int(text) <= MAX_WORKERS:
        raise typer.BadParameter(f"expected 1 to {MAX_WORKERS}")
    return int(text)


def _workers_option(help_text: str) -> Any:
    return typer.Option("--workers", parser=_workers, help=help_text)


ConsumerWorkers = Annotated[
    int,
    _workers_option(
        "Processes in the consumer group (the partitions are spread over them; at most one each)"
    ),
]
AdapterWorkers = Annotated[
    int,
    _workers_option(
        "Processes serving the port (one listening socket; the first also runs the outbox relay)"
    ),
]
