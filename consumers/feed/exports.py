"""Feed files on disk (JSON, CSV in UTF-8 or CP932) and a text summary of a revision, for the CLI and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(console: Console, body: dict[str, Any]) -> None:
    """A small table of one feed revision: indicators for the authority and each site (hidden: ×)."""
    table = Table(title=f"feed {body['authority']} {body['month']} revision {body.get('revision', '?')}",
                  show_edge=False)  # fmt: skip
    scopes = ["authority", *body["indicators"]["sites"]]
    table.add_column("indicator")
    for s in scopes:
        table.add_column(s, justify="right")
    order = ["new_registrations", "referred_by_authority", "referral_share", "placements", "placement_rate",
             "team_support"]  # fmt: skip
    names = order + sorted(n for n in body["indicators"]["authority"] if n not in order)
    for name in names:
        cells = []
        for s in scopes:
            values = body["indicators"]["authority"] if s == "authority" else body["indicators"]["sites"][s]
            v = values.get(name, "")
            cells.append("×" if v is None and name in values else str(v))
        table.add_row(name, *cells)
    console.print(table)
    for t in body["targets"]:
        console.print(f"  targets {t['site']} FY{t['fiscal_year']}: {t['achievement']} {t['met']}")
    hidden = sum(1 for ts in body["groups"].values() for t in ts for c in t["cells"] if c[1] is None)
    console.print(f"  cells suppressed (threshold {body['threshold']}): {hidden}")


async def export_feed(
    settings: Any,
    pool: Any,
    authority: str,
    month: str,
    out_dir: Path,
    *,
    format: str,
    encoding: str,
    revision: int | None = None,
    purpose: str,
    who: str,
) -> tuple[list[Path], int]:
    from consumers.feed.delivery import INDIVIDUAL_FIELDS, deliver, record_access
    from infra.crypto import KeyStore

    keystore = KeyStore.from_settings(settings)
    async with pool.acquire() as conn:
        delivery = await deliver(conn, keystore, authority, month, revision)
        rev = delivery.body["revision"]
        await record_access(conn, client_id=who, organisation="operator:cli", authority=authority, month=month,
                            revision=rev, fields=list(INDIVIDUAL_FIELDS), purpose=purpose, outcome="granted",
                            person_keys=delivery.person_keys)  # fmt: skip
    return write_exports(delivery, out_dir, f"feed_{authority}_{month}_r{rev}", format, encoding)


def write_exports(
    delivery: Any, out_dir: Path, stem_name: str, format: str, encoding: str
) -> tuple[list[Path], int]:
    import orjson

    from consumers.feed.delivery import aggregates_rows, individual_rows, to_csv, to_json

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / stem_name
    if format == "json":
        path = stem.with_suffix(".json")
        path.write_bytes(orjson.dumps(to_json(delivery), option=orjson.OPT_INDENT_2))
        return [path], 0
    written, substituted = [], 0
    suffix = "" if encoding == "utf-8" else "_cp932"
    for part, rows in (
        ("aggregates", aggregates_rows(delivery.body)),
        ("individuals", individual_rows(delivery)),
    ):
        data, n = to_csv(rows, encoding)  # type: ignore[arg-type]
        path = Path(f"{stem}_{part}{suffix}.csv")
        path.write_bytes(data)
        written.append(path)
        substituted += n
    return written, substituted
