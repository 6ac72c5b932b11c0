"""Feed files on disk (JSON, CSV in UTF-8 or CP932) and a text summary of a revision, for the CLI and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(console: Console, body: dict[str, Any]) -> None:
    """A small table of one feed revision: indicators for the authority and each site (hidden: ×)."""
    from domain.feed import GROUP_LABELS_JA

    table = Table(title=f"feed {body['authority']} {body['month']} revision {body.get('revision', '?')}",
                  show_edge=False)  # fmt: skip
    scopes = ["authority", *body["indicators"]["sites"]]
    table.add_column("indicator")
    for s in scopes:
        table.add_column(s, justify="right")

    def values(scope: str) -> dict[str, Any]:
        v: dict[str, Any] = body["indicators"]["authority" if scope == "authority" else "sites"]
        return v if scope == "authority" else v[scope]

    for name in body["indicators"]["authority"]:
        if name == "by_group":
            continue
        table.add_row(name, *("×" if values(s).get(name) is None else str(values(s)[name]) for s in scopes))
    for g, ja in GROUP_LABELS_JA.items():
        for figure in ("referral_placements", "placement_rate"):
            cells = [values(s)["by_group"][g][figure] for s in scopes]
            table.add_row(f"{ja} {figure}", *("×" if v is None else str(v) for v in cells))
    console.print(table)
    for e in body["targets"]:
        state = "left out of the evaluation" if e["excluded"] else (e["achievement"] or e["pace"])
        statuses = ", ".join(f"{t['kind']}{'[' + t['group'] + ']' if t.get('group') else ''}: {t['status']}"
                             for t in e["targets"])  # fmt: skip
        console.print(f"  targets {e['scope']} FY{e['fiscal_year']}: {state} ({statuses})")
    tables = (body.get("populations") or body.get("groups") or {}).values()
    hidden = sum(1 for ts in tables for t in ts for c in t["cells"] if c[1] is None)
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


# --- the ministry's roll-up -------------------------------------------------------------------------------


def rollup_workbook(body: dict[str, Any]) -> bytes:
    """The roll-up as an Excel workbook (openpyxl): one sheet per table of the report, what the
    ministry's and the authorities' staff open. Suppressed counts are empty cells."""
    import io

    from openpyxl import Workbook
    from openpyxl.styles import Font

    from domain.ministry import report_tables

    book = Workbook()
    book.remove(book.active)
    for title, rows in report_tables(body).items():
        sheet = book.create_sheet(title[:31])  # Excel's limit on sheet names
        for row in rows:
            sheet.append(["" if v is None else v for v in row])
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        sheet.freeze_panes = "B2"
    meta = book.create_sheet("説明")
    meta.append(["年度", body["fiscal_year"]])
    meta.append(["対象月（まで）", body["through"]])
    meta.append(["版", body.get("revision", "")])
    meta.append(["秘匿の閾値", body["threshold"]])
    meta.append(
        ["注", "空欄は秘匿（少数のため）。就職件数はハローワーク窓口での職業紹介による就職（紹介就職）。"]
    )
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def rollup_csv(body: dict[str, Any], table: str, encoding: str) -> tuple[bytes, int]:
    """One table of the roll-up as CSV (UTF-8, or CP932 with CRLF)."""
    from consumers.feed.delivery import to_csv
    from domain.ministry import TABLE_KEYS, report_tables

    rows = report_tables(body)[TABLE_KEYS[table]]
    return to_csv([["" if v is None else str(v) for v in row] for row in rows], encoding)  # type: ignore[arg-type]


def write_rollup(body: dict[str, Any], out_dir: Path, encoding: str) -> list[Path]:
    """Every table as a CSV and the workbook, under ``out_dir``."""
    from domain.ministry import TABLE_KEYS

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"rollup_FY{body['fiscal_year']}_{body['through']}_r{body.get('revision', 1)}"
    written = []
    suffix = "" if encoding == "utf-8" else "_cp932"
    for key in TABLE_KEYS:
        data, _ = rollup_csv(body, key, encoding)
        path = out_dir / f"{stem}_{key}{suffix}.csv"
        path.write_bytes(data)
        written.append(path)
    path = out_dir / f"{stem}.xlsx"
    path.write_bytes(rollup_workbook(body))
    written.append(path)
    return written


def print_rollup(console: Console, body: dict[str, Any]) -> None:
    """The roll-up's headline tables: national rows of each report table."""
    from domain.ministry import report_tables

    console.print(
        f"roll-up FY{body['fiscal_year']} through {body['through']} revision {body.get('revision', 1)}"
    )
    for title, rows in report_tables(body).items():
        table = Table(title=title, show_edge=False)
        for h in rows[0]:
            table.add_column(str(h))
        table.add_row(*("×" if v is None else str(v) for v in rows[1]))
        console.print(table)
