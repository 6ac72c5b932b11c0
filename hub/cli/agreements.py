"""``hub agreements add|list|end``: the data-sharing agreement register (個人情報保護協定).

Personal data crosses sides only under the person's consent AND an agreement in force covering the
purpose between the authority and the Hello Work office (``domain.agreements``)."""

from __future__ import annotations

import asyncio
import getpass
from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.db import with_conn

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


agreements_app = typer.Typer(no_args_is_help=True, add_completion=False)


@agreements_app.command("add")
def agreements_add(
    authority: Annotated[str, typer.Option(help="Local government code of the authority (首長)")],
    office: Annotated[list[str], typer.Option(help="Hello Work office code (repeatable)")],
    purpose: Annotated[
        list[str],
        typer.Option(help="share_registration, disclose_placement, retention_support (repeatable)"),
    ],
    valid_from: Annotated[str, typer.Option("--from", help="First day in force (YYYY-MM-DD)")],
    valid_until: Annotated[
        str | None, typer.Option("--until", help="Last day in force (default: open-ended)")
    ] = None,
    site: Annotated[
        list[str] | None, typer.Option(help="Joint site covered (repeatable; default: all sites)")
    ] = None,
    title: Annotated[str, typer.Option(help="Title of the agreement document")] = "",
) -> None:
    """Register an agreement between a labour bureau (its offices) and an authority."""
    from consumers.agreements import add_agreement
    from domain.calendar import DateFormatError, parse_day
    from domain.codes import CodeError

    try:
        start = parse_day(valid_from)
        end = parse_day(valid_until) if valid_until else None
    except DateFormatError as exc:
        err.print(f"[red]--from/--until: {exc}[/]")
        raise typer.Exit(2) from None

    async def _add(conn: Any) -> str:
        return await add_agreement(
            conn,
            authority=authority,
            offices=office,
            sites=site or [],
            purposes=purpose,
            valid_from=start,
            valid_until=end,
            title=title,
            created_by=f"cli:{getpass.getuser()}",
        )

    try:
        agreement_id = asyncio.run(with_conn(_add))
    except (ValueError, CodeError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    out.print(
        f"agreement [bold]{agreement_id}[/]: authority {authority} ⇄ offices {', '.join(office)}, "
        f"purposes {', '.join(purpose)}, from {start}" + (f" until {end}" if end else "")
    )


@agreements_app.command("list")
def agreements_list() -> None:
    """Every agreement, with its parties, purposes and period."""
    from consumers.agreements import list_agreements

    rows = asyncio.run(with_conn(list_agreements))
    table = Table(show_edge=False)
    table.add_column("agreement", no_wrap=True, min_width=16)  # whole: `hub agreements end` takes it
    for column in ("authority", "offices", "sites", "purposes", "from", "until", "ended"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["agreement_id"],
            r["authority"],
            ",".join(r["offices"]),
            ",".join(r["sites"]) or "(all)",
            ",".join(r["purposes"]),
            r["valid_from"].isoformat(),
            r["valid_until"].isoformat() if r["valid_until"] else "",
            r["ended_at"].isoformat(timespec="seconds") if r["ended_at"] else "",
        )
    out.print(table)


@agreements_app.command("end")
def agreements_end(
    agreement_id: Annotated[str, typer.Argument()],
    on: Annotated[str | None, typer.Option(help="Last day in force (default: today)")] = None,
) -> None:
    """End an agreement: from the day after, nothing it covered is disclosed."""
    from consumers.agreements import end_agreement
    from domain.calendar import DateFormatError, parse_day

    try:
        last = parse_day(on) if on else date.today()
    except DateFormatError as exc:
        err.print(f"[red]--on: {exc}[/]")
        raise typer.Exit(2) from None

    async def _end(conn: Any) -> bool:
        return await end_agreement(conn, agreement_id, on=last, ended_by=f"cli:{getpass.getuser()}")

    if not asyncio.run(with_conn(_end)):
        err.print(f"[red]no agreement {agreement_id}[/]")
        raise typer.Exit(1)
    out.print(f"agreement {agreement_id} ends on {last}")


def register(app: typer.Typer, run_app: typer.Typer) -> None:
    """Add this component's commands: ``hub agreements add|list|end``."""
    app.add_typer(
        agreements_app,
        name="agreements",
        help="Data-sharing agreements (個人情報保護協定): the second key to every disclosure",
    )
