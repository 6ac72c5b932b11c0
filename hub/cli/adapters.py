"""CLI commands of the adapters: ``hub run welfare-adapter|employment-adapter``, ``hub import FILE``,
``hub clients add|list|revoke`` and ``hub sites add|list|load-simulated``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.db import with_conn
from hub.cli.options import AdapterWorkers, Seed, whole_option

out = Console(soft_wrap=True)  # messages stay whole lines (greppable, copyable)
err = Console(stderr=True, soft_wrap=True)


clients_app = typer.Typer(no_args_is_help=True, add_completion=False)


sites_app = typer.Typer(no_args_is_help=True, add_completion=False)


def run_welfare(workers: AdapterWorkers = 1) -> None:
    """Authority side: consent, referral, retention over HTTP and CSV (with the outbox relay)."""
    _serve("welfare", workers)


def run_employment(workers: AdapterWorkers = 1) -> None:
    """Hello Work side: registration, consent, placement, retention over HTTP and CSV (with the relay)."""
    _serve("employment", workers)


def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV file (UTF-8 or CP932)")],
    family: Annotated[str, typer.Option(help="registration, consent, referral, placement or retention")],
    token: Annotated[
        str | None, typer.Option(help="Client token; default: $HUB_CLIENT_TOKEN", show_default=False)
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the accepted rows are in Kafka")] = True,
    show: Annotated[int, whole_option("--show", lo=0, hi=100_000, help="How many row errors to print")] = 20,
) -> None:
    """Import a batch file as the client system the token belongs to (same rules as the CSV upload)."""
    credentials = token or os.environ.get("HUB_CLIENT_TOKEN")
    if not credentials:
        err.print("[red]no credentials: pass --token or set HUB_CLIENT_TOKEN[/]")
        raise typer.Exit(2)
    with file.open("rb") as content:  # read a block at a time by the importer, never whole
        code = asyncio.run(_import(file, content, family, credentials, wait=wait, show=show))
    raise typer.Exit(code)


@clients_app.command("add")
def clients_add(
    name: Annotated[str, typer.Argument(help="A label for the client system")],
    kind: Annotated[str, typer.Option(help="authority, office, hello_work_national, operator or ministry")],
    code: Annotated[str, typer.Option(help="Local government code, office code, or * (national/operator)")],
    role: Annotated[list[str] | None, typer.Option(help="publish, read, operate (repeatable)")] = None,
) -> None:
    """Create a client; prints its token once (only a hash is stored)."""
    from domain.codes import CodeError, validate_local_government_code
    from infra.auth import OrgKind, Role, add_client

    try:
        org_kind = OrgKind(kind)
        roles = frozenset(Role(r) for r in (role or ["publish"]))
        if org_kind is OrgKind.AUTHORITY:
            validate_local_government_code(code)
        elif org_kind is OrgKind.OFFICE and not (len(code) == 4 and code.isascii() and code.isdigit()):
            # ASCII (P1): str.isdigit() takes １３０１, a second spelling no site or event could match
            raise ValueError(f"office code {code!r}: expected 4 ASCII digits")
    except (ValueError, CodeError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None

    async def _add(conn: Any) -> tuple[str, str]:
        return await add_client(conn, name=name, org_kind=org_kind, org_code=code, roles=roles)

    client_id, secret = asyncio.run(with_conn(_add))
    out.print(f"client [bold]{client_id}[/] ({org_kind.value}:{code}, roles {', '.join(sorted(roles))})")
    out.print("token (shown once, store it in the client system):")
    out.print(secret, soft_wrap=True, highlight=False)


@clients_app.command("list")
def clients_list() -> None:
    """Clients and their organisation, roles and state (no secrets: only hashes are stored)."""
    from infra.auth import list_clients

    rows = asyncio.run(with_conn(list_clients))
    table = Table(show_edge=False)
    for column in ("client", "name", "organisation", "roles", "created", "revoked"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["client_id"],
            r["name"],
            f"{r['org_kind']}:{r['org_code']}",
            ",".join(r["roles"]),
            r["created_at"].isoformat(timespec="seconds"),
            r["revoked_at"].isoformat(timespec="seconds") if r["revoked_at"] else "",
        )
    out.print(table)


@clients_app.command("revoke")
def clients_revoke(client_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a client's credentials: its next request gets 401."""
    from infra.auth import revoke_client

    async def _revoke(conn: Any) -> bool:
        return await revoke_client(conn, client_id)

    if not asyncio.run(with_conn(_revoke)):
        err.print(f"[red]no active client {client_id}[/]")
        raise typer.Exit(1)
    out.print(f"revoked {client_id}")


@sites_app.command("add")
def sites_add(
    site_id: Annotated[str, typer.Argument(help="<local government code>-<NN>, e.g. 131041-01")],
    office: Annotated[str, typer.Option(help="Hello Work office code serving the site (4 digits)")],
    name: Annotated[str, typer.Option(help="Site name")] = "",
) -> None:
    """Add (or update) a joint site; the authority is the site id's prefix."""
    from producers.adapters.sites import add_sites

    async def _add(conn: Any) -> int:
        return await add_sites(conn, [(site_id, office, name)])

    try:
        asyncio.run(with_conn(_add))
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    out.print(f"site {site_id}: authority {site_id[:6]}, office {office}")


@sites_app.command("list")
def sites_list() -> None:
    """The joint sites registry."""
    from producers.adapters.sites import list_sites

    table = Table(show_edge=False)
    for column in ("site", "authority", "office", "name"):
        table.add_column(column)
    for r in asyncio.run(with_conn(list_sites)):
        table.add_row(r["site_id"], r["authority"], r["office"], r["name"])
    out.print(table)


@sites_app.command("load-simulated")
def sites_load_simulated(
    authorities: Annotated[int, whole_option("--authorities", lo=1, hi=100_000)] = 3, seed: Seed = 1
) -> None:
    """Fill the registry with the simulator's authorities and sites (same options as ``hub simulate``)."""
    from devtools.simulator import SimulationConfig, build_authorities
    from producers.adapters.sites import add_sites

    found = build_authorities(SimulationConfig(authorities=authorities, seed=seed))
    rows = [(s.site_id, s.office, f"{a.name} {s.site_id[-2:]}") for a in found for s in a.sites]

    async def _add(conn: Any) -> int:
        return await add_sites(conn, rows)

    out.print(f"{asyncio.run(with_conn(_add))} sites loaded")


def register(app: typer.Typer, run_app: typer.Typer) -> None:
    """Add this component's commands: top-level ones on ``app``, services on ``run_app`` (``hub run X``)."""
    app.add_typer(
        clients_app, name="clients", help="Client credentials (one organisation each, stored hashed)"
    )
    app.add_typer(
        sites_app, name="sites", help="Joint sites registry (拠点): authority and office of each site"
    )
    run_app.command("welfare-adapter")(run_welfare)
    run_app.command("employment-adapter")(run_employment)
    app.command("import")(import_file)


def _serve(kind: str, workers: int = 1) -> None:
    from fastapi import FastAPI

    from infra.config import get_settings
    from infra.logging import configure_logging
    from producers.adapters.app import employment_app, welfare_app
    from producers.adapters.serve import run, run_workers

    settings = get_settings()
    configure_logging(settings.log_level)
    make = welfare_app if kind == "welfare" else employment_app
    port = settings.welfare_port if kind == "welfare" else settings.employment_port
    each = f", {workers} workers" if workers > 1 else ""
    out.print(f"{kind} adapter on http://{settings.http_host}:{port} (OpenAPI at /docs{each})")
    if workers == 1:
        run(make(settings), settings.http_host, port)
        return

    def make_app(runs_relay: bool) -> FastAPI:
        # Read again in each worker: ``supervise`` clears the settings cache (metrics port per worker).
        return make(get_settings(), relay=runs_relay and get_settings().adapter_runs_relay)

    run_workers(make_app, settings.http_host, port, workers)


async def _import(file: Path, content: BinaryIO, family: str, token: str, *, wait: bool, show: int) -> int:
    from infra.auth import AuthError
    from infra.codecs.csv_rows import FileError
    from infra.config import get_settings
    from infra.runner import prepare
    from producers.adapters.csv_import import import_as_client

    settings = get_settings()
    pool = await prepare(settings)
    try:
        try:
            summary = await import_as_client(settings, pool, content, family, token, wait=wait, console=err)
        except FileError as exc:
            err.print(f"[red]{file}: {exc}[/]")
            return 2
        except AuthError as exc:
            err.print(f"[red]{exc.status}: {exc.reason}[/]")
            return 2
        except ValueError as exc:
            err.print(f"[red]{exc}[/]")
            return 2
    finally:
        await pool.close()
    out.print(
        f"{file}: {summary.rows} rows ({summary.encoding}): [green]{summary.accepted} accepted[/], "
        f"{summary.duplicates} already imported, [red]{summary.rejected} rejected[/]"
    )
    for line, error in summary.errors[:show]:
        out.print(f"  line {line}: {error.message}", highlight=False)
    if len(summary.errors) > show:
        out.print(f"  … {len(summary.errors) - show} more")
    if summary.file_error:
        out.print(f"[red]stopped: {summary.file_error}[/]")
    return 1 if summary.rejected or summary.file_error else 0
