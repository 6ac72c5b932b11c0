"""CLI commands of the placement feed: ``hub run placement-feed``, ``hub run feed-api``,
``hub feed build|show|export|rollup`` and ``hub targets set|exclude|list``."""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from consumers.feed.exports import export_feed, print_summary
from hub.cli.options import FiscalYear, Revision, decimal_option, whole_option

out = Console()
err = Console(stderr=True)

feed_app = typer.Typer(no_args_is_help=True, add_completion=False)
targets_app = typer.Typer(no_args_is_help=True, add_completion=False)

AuthorityOpt = Annotated[
    str, typer.Option("--authority", help="Local government code (6 digits, check digit)")
]
MonthOpt = Annotated[str, typer.Option("--month", help="Reporting month, YYYY-MM")]


def _authority(code: str) -> str:
    from domain.codes import validate_local_government_code

    try:
        return validate_local_government_code(code)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--authority") from None


def _month(text: str) -> Any:
    from domain.calendar import DateFormatError, parse_month

    try:
        return parse_month(text)
    except DateFormatError as exc:
        raise typer.BadParameter(str(exc), param_hint="--month") from None


async def _with_pool(fn: Any) -> Any:
    from infra.config import get_settings
    from infra.runner import prepare

    settings = get_settings()
    pool = await prepare(settings)
    try:
        return await fn(settings, pool)
    finally:
        await pool.close()


@feed_app.command("build")
def feed_build(
    month: MonthOpt,
    authority: Annotated[
        str | None, typer.Option("--authority", help="Only this authority (default: all)")
    ] = None,
) -> None:
    """Build the due revisions of a closed month: revision 1 as of the cutoff, then N+1 if later events changed it."""
    from consumers.feed.builder import FeedNotClosed, build_month, composing_workers

    ym = _month(month)
    code = _authority(authority) if authority else None

    async def run(settings: Any, pool: Any) -> Any:
        with composing_workers(settings) as executor:
            return await build_month(
                pool, settings, ym, authorities=[code] if code else None, executor=executor
            )

    try:
        built = asyncio.run(_with_pool(run))
    except FeedNotClosed as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if not built:
        out.print(f"nothing to build for {ym}: every feed is up to date")
    for b in built:
        out.print(f"built {b.authority} {b.month} revision {b.revision}: {len(b.changes)} figures changed")


@feed_app.command("show")
def feed_show(authority: AuthorityOpt, month: MonthOpt, revision: Revision = None) -> None:
    """Print a feed's indicators, targets and revision history (aggregates only)."""
    from consumers.feed.delivery import FeedNotFound, load_revision

    code, ym = _authority(authority), _month(month)

    async def run(settings: Any, pool: Any) -> Any:
        async with pool.acquire() as conn:
            row = await load_revision(conn, code, str(ym), revision)
            history = await conn.fetch(
                "SELECT revision, horizon, built_at, published_at, json_array_length(changes) AS n "
                "FROM feed_revisions WHERE authority = $1 AND month = $2 ORDER BY revision",
                code,
                str(ym),
            )
            return row, history

    try:
        row, history = asyncio.run(_with_pool(run))
    except FeedNotFound as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    print_summary(out, dict(row["body"]))
    hist = Table(title="revisions", show_edge=False)
    for col in ("revision", "counts events sent by", "built", "published", "figures changed"):
        hist.add_column(col)
    for h in history:
        hist.add_row(str(h["revision"]), h["horizon"].isoformat(), h["built_at"].isoformat(timespec="seconds"),
                     "yes" if h["published_at"] else "pending", str(h["n"]))  # fmt: skip
    out.print(hist)
    changes = row["body"].get("changes", [])
    if changes:
        hidden = [c["figure"] for c in changes if c["change"] == "suppressed"]
        out.print(f"  changed since the previous revision: {len(changes)} figures, {len(hidden)} of them now "
                  "suppressed (a changed count is hidden; see docs/disclosure.md)")  # fmt: skip
        for c in changes[:10]:
            out.print(f"    {c['figure']}: {c['change']} {c.get('before', '')} {c.get('after', '')}".rstrip())


@feed_app.command("export")
def feed_export(
    authority: AuthorityOpt,
    month: MonthOpt,
    format: Annotated[Literal["json", "csv"], typer.Option("--format")] = "json",
    encoding: Annotated[Literal["utf-8", "cp932"], typer.Option("--encoding")] = "utf-8",
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write into")] = Path("artifacts/feeds"),
    revision: Revision = None,
    purpose: Annotated[
        str, typer.Option(help="Why the individual list is read (access log)")
    ] = "monthly delivery",
) -> None:
    """Write a feed with its consented individual list (JSON: one file; CSV: aggregates and individuals)."""
    from consumers.feed.delivery import FeedNotFound

    code, ym = _authority(authority), _month(month)

    async def run(settings: Any, pool: Any) -> Any:
        return await export_feed(settings, pool, code, str(ym), out_dir, format=format, encoding=encoding,
                                 revision=revision, purpose=purpose,
                                 who=f"cli:{getpass.getuser()}")  # fmt: skip

    try:
        paths, substituted = asyncio.run(_with_pool(run))
    except FeedNotFound as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    for p in paths:
        out.print(f"wrote {p}")
    if substituted:
        out.print(f"[yellow]{substituted} character(s) CP932 cannot hold were written as 〓; "
                  "the UTF-8 export is the exact, canonical form[/]")  # fmt: skip


@feed_app.command("individual-list")
def individual_list(
    choice: Annotated[str, typer.Argument(help="off: stop receiving names and employers; on: receive again")],
    authority: Annotated[str, typer.Option(help="Local government code of the authority")],
) -> None:
    """An authority's choice to receive the individual list (aggregates always flow)."""
    if choice not in ("on", "off"):
        err.print("[red]choice: expected on or off[/]")
        raise typer.Exit(2)

    async def run(_: Any, pool: Any) -> None:
        async with pool.acquire() as conn:
            if choice == "off":
                await conn.execute(
                    "INSERT INTO feed_individual_list_opt_outs (authority, by_whom) VALUES ($1, 'cli') "
                    "ON CONFLICT DO NOTHING",
                    authority,
                )
            else:
                await conn.execute(
                    "DELETE FROM feed_individual_list_opt_outs WHERE authority = $1", authority
                )

    asyncio.run(_with_pool(run))
    out.print(f"authority {authority}: individual list {choice}")


def _scope(scope: str) -> str:
    """A site id (131041-01) or an authority's local government code (131041)."""
    from pydantic import TypeAdapter, ValidationError

    from contracts.types import SiteId

    if len(scope) == 6:
        return _authority(scope)
    try:
        return TypeAdapter(SiteId).validate_python(scope)
    except ValidationError as exc:
        raise typer.BadParameter(exc.errors()[0]["msg"], param_hint="--scope") from None


async def _mark_fiscal_year(pool: Any, scope: str, fy: int) -> None:
    # Feeds of that fiscal year already built get a new revision showing the targets at the next build.
    await pool.execute(
        "INSERT INTO feed_dirty (authority, month) SELECT DISTINCT authority, month FROM feed_revisions "
        "WHERE authority = $1 AND month BETWEEN $2 AND $3",
        scope[:6], f"{fy}-04", f"{fy + 1}-03",
    )  # fmt: skip


@targets_app.command("set")
def targets_set(
    scope: Annotated[str, typer.Option("--scope", help="A site id (131041-01) or an authority (131041)")],
    fy: FiscalYear,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="new_job_seekers, referral_placements, confirmed_placements, "
            "regular_placements, team_support, referral_share or placement_rate",
        ),
    ],
    value: Annotated[
        float, decimal_option("--value", lo=0.0, help="A count, or a fraction for a rate (0.4)")
    ],
    group: Annotated[
        str | None, typer.Option("--group", help="A target group (e.g. welfare, disability)")
    ] = None,
) -> None:
    """Set one yearly target of a site or an authority (the steering council's 目標)."""
    from domain.feed import Target, TargetKind

    code = _scope(scope)
    try:
        t = Target(code, fy, TargetKind(kind), value, group)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def run(settings: Any, pool: Any) -> None:
        await pool.execute(
            "INSERT INTO feed_target_values (scope, fiscal_year, kind, target_group, value, set_at) "
            "VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (scope, fiscal_year, kind, target_group) DO UPDATE "
            "SET value = EXCLUDED.value, set_at = EXCLUDED.set_at",
            t.scope, t.fiscal_year, str(t.kind), t.group or "", t.value, datetime.now(UTC),
        )  # fmt: skip
        await _mark_fiscal_year(pool, t.scope, fy)

    asyncio.run(_with_pool(run))
    out.print(f"target for {code} FY{fy}: {kind}{'[' + group + ']' if group else ''} = {value} "
              f"(feeds of FY{fy} show it from the next build)")  # fmt: skip


@targets_app.command("exclude")
def targets_exclude(
    scope: Annotated[str, typer.Option("--scope", help="A site id or an authority")],
    fy: FiscalYear,
    reason: Annotated[str, typer.Option("--reason", help="e.g. new this year")] = "new this year",
) -> None:
    """Leave a site or an authority out of a fiscal year's evaluation (e.g. new that year)."""
    code = _scope(scope)

    async def run(settings: Any, pool: Any) -> None:
        await pool.execute(
            "INSERT INTO feed_evaluation_exclusions (scope, fiscal_year, reason) VALUES ($1,$2,$3) "
            "ON CONFLICT (scope, fiscal_year) DO UPDATE SET reason = EXCLUDED.reason",
            code, fy, reason[:200],
        )  # fmt: skip
        await _mark_fiscal_year(pool, code, fy)

    asyncio.run(_with_pool(run))
    out.print(f"{code} is left out of FY{fy}'s evaluation ({reason[:200]})")


@targets_app.command("list")
def targets_list(
    fy: Annotated[int | None, whole_option("--fy", lo=2011, hi=2100, help="Only this fiscal year")] = None,
) -> None:
    """List targets and exclusions."""

    async def run(settings: Any, pool: Any) -> Any:
        return await pool.fetch(
            "SELECT t.*, (e.scope IS NOT NULL) AS excluded FROM feed_target_values t LEFT JOIN "
            "feed_evaluation_exclusions e USING (scope, fiscal_year) WHERE $1::int IS NULL OR t.fiscal_year = $1 "
            "ORDER BY t.fiscal_year, t.scope, t.kind, t.target_group",
            fy,
        )

    rows = asyncio.run(_with_pool(run))
    table = Table(show_edge=False)
    for col in ("scope", "FY", "kind", "group", "value", "excluded", "set at"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["scope"], str(r["fiscal_year"]), r["kind"], r["target_group"], str(float(r["value"])),
                      "yes" if r["excluded"] else "", r["set_at"].isoformat(timespec="seconds"))  # fmt: skip
    out.print(table)


@feed_app.command("rollup")
def feed_rollup(
    fy: FiscalYear,
    through: Annotated[
        str | None, typer.Option("--through", help="Last month counted (default: March)")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write CSV (per table) and .xlsx here")
    ] = None,
    encoding: Annotated[Literal["utf-8", "cp932"], typer.Option("--encoding")] = "cp932",
) -> None:
    """Build the ministry's national and per-prefecture roll-up and print the report's headline tables."""
    from consumers.feed.exports import print_rollup, write_rollup
    from consumers.feed.rollup import build_rollup

    ym = _month(through) if through else None

    async def run(settings: Any, pool: Any) -> Any:
        return await build_rollup(pool, settings, fy, ym)

    try:
        _, body = asyncio.run(_with_pool(run))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--through") from None
    print_rollup(out, body)
    if out_dir is not None:
        for p in write_rollup(body, out_dir, encoding):
            out.print(f"wrote {p}")


def register(app: typer.Typer, run_app: typer.Typer) -> None:
    """Add this component's commands: top-level ones on ``app``, services on ``run_app`` (``hub run X``)."""
    app.add_typer(feed_app, name="feed", help="Monthly placement feed per authority: build, show, export")
    app.add_typer(targets_app, name="targets", help="Yearly targets per joint site or authority")

    @run_app.command("placement-feed")
    def run_placement_feed() -> None:
        """Feed consumer (own projection) and builder of due revisions, published to the feed topic."""
        from consumers.feed.service import services
        from infra.runner import run_forever

        run_forever(services)  # type: ignore[arg-type]

    @run_app.command("feed-api")
    def run_feed_api() -> None:
        """HTTP download of an authority's own feed (authority clients with the read role)."""
        from consumers.feed.api import create_feed_app
        from infra.config import get_settings
        from infra.http import serve
        from infra.logging import configure_logging

        s = get_settings()
        configure_logging(s.log_level)
        serve(create_feed_app(s), s.http_host, s.feed_port)
