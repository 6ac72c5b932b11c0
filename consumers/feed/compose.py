"""Composing one revision of one feed from its facts: tables, disclosure control, indicators, targets.

Pure (no I/O), so the national build can run it in a process pool. The body holds aggregates only:
suppressed cells are ``null`` with the reason, and no field identifies a person.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from domain.disclosure import (
    CellRef,
    PublishedCell,
    SuppressedFeed,
    SuppressionReason,
    Table,
    counts,
    suppress_many,
)
from domain.feed import (
    FeedInput,
    SiteTargets,
    YearToDate,
    achievement,
    indicators,
    placement_tables,
    registration_tables,
    retention_tables,
)
from domain.occupation import CLASSIFICATION_VERSION


@dataclass(frozen=True)
class Composed:
    body: dict[str, Any]
    suppressed: list[list[Any]]  # [table, key] of every hidden cell, for the next revision
    figures: dict[str, Any]  # flat view for change summaries


def _revise(
    tables: Sequence[Table], threshold: int, previous: Mapping[CellRef, int | None]
) -> tuple[SuppressedFeed, dict[CellRef, str]]:
    """Revision N+1: hide every cell hidden in revision N and every cell whose count changed since.

    Why this is enough (docs/disclosure.md): what revision N+1 publishes equals what revision N
    published on those cells, so it adds nothing an attacker could combine; and for each hidden cell
    both "nothing changed" and the true counts are consistent with everything published, so its range
    stays what revision N's audit accepted, or holds two values one of which revision N published
    (0 or at least the threshold). A cell new to the layout (a site category first seen) counts as changed.
    """
    cells: dict[CellRef, PublishedCell] = {}
    reasons: dict[CellRef, str] = {}
    for ref, value in counts(tables).items():
        if ref not in previous:
            reasons[ref] = "new_in_revision"
        elif (before := previous[ref]) is None:
            reasons[ref] = SuppressionReason.PREVIOUS_REVISION.value
        elif before != value:
            reasons[ref] = "changed_since_previous_revision"
        else:
            cells[ref] = PublishedCell(ref, value, None)
            continue
        cells[ref] = PublishedCell(ref, None, SuppressionReason.PREVIOUS_REVISION)
    return SuppressedFeed(tuple(tables), threshold, MappingProxyType(cells)), reasons


def _table_json(feed: SuppressedFeed, reasons: Mapping[CellRef, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    by_table: dict[str, list[list[Any]]] = {}
    for ref, cell in feed.cells.items():
        reason = reasons.get(ref) or (cell.reason.value if cell.reason else None)
        by_table.setdefault(ref.table, []).append([list(ref.key), cell.value, reason])
    for t in feed.tables:
        out.append({"name": t.name, "dims": list(t.dims), "cells": by_table[t.name]})
    return out


def previous_cells(body: Mapping[str, Any]) -> dict[CellRef, int | None]:
    return {
        CellRef(t["name"], tuple(key)): value
        for tables in body["groups"].values()
        for t in tables
        for key, value, _ in t["cells"]
    }


def _ytd_value(n: int, threshold: int) -> int | None:
    return None if 1 <= n < threshold else n


@dataclass(frozen=True)
class Job:
    """One feed to compose: its facts, the previous revision's published cells (None for revision 1),
    and the targets of its sites with their year-to-date results."""

    feed: FeedInput
    previous: Mapping[CellRef, int | None] | None = None
    targets: Sequence[SiteTargets] = ()
    year_to_date: Mapping[str, YearToDate] | None = None


def compose(
    feed: FeedInput,
    *,
    threshold: int,
    previous: Mapping[CellRef, int | None] | None = None,
    targets: Sequence[SiteTargets] = (),
    year_to_date: Mapping[str, YearToDate] | None = None,
) -> Composed:
    """Revision 1 (``previous`` None): suppression with the audit of ``domain.disclosure``. Later
    revisions: ``_revise`` against the previous revision's published cells."""
    return compose_many([Job(feed, previous, targets, year_to_date)], threshold=threshold)[0]


_GROUPS = ("placements", "registrations", "retention")


def compose_many(jobs: Sequence[Job], *, threshold: int) -> list[Composed]:
    """``compose`` for several feeds; each gets exactly what ``compose`` gives it alone, but the
    revision-1 feeds are suppressed together (``suppress_many``) so that they share solver calls."""
    tables = [(placement_tables(j.feed), registration_tables(j.feed), retention_tables(j.feed)) for j in jobs]
    fresh = [n for n, j in enumerate(jobs) if j.previous is None]
    suppressed = iter(suppress_many([(t, frozenset()) for n in fresh for t in tables[n]], threshold))
    out = []
    for job, group_tables in zip(jobs, tables, strict=True):
        groups: dict[str, SuppressedFeed] = {}
        reasons: dict[CellRef, str] = {}
        for group, t in zip(_GROUPS, group_tables, strict=True):
            if job.previous is None:
                groups[group] = next(suppressed)
            else:
                groups[group], why = _revise(t, threshold, job.previous)
                reasons |= why
        out.append(_finish(job, groups, reasons, threshold))
    return out


def _finish(
    job: Job, groups: dict[str, SuppressedFeed], reasons: dict[CellRef, str], threshold: int
) -> Composed:
    feed, targets, year_to_date = job.feed, job.targets, job.year_to_date
    p, r, k = groups["placements"], groups["registrations"], groups["retention"]
    ind: dict[str, Any] = {"authority": indicators(p, r, k, None)}
    ind["sites"] = {site: indicators(p, r, k, site) for site in feed.sites}
    target_rows = []
    for t in targets:
        ytd = (year_to_date or {}).get(t.site, YearToDate(0, 0, 0, 0))
        cls, met = achievement(t, ytd)
        share = ytd.referral_share
        target_rows.append(
            {
                "site": t.site,
                "fiscal_year": t.fiscal_year,
                "targets": {
                    "placements": t.placements,
                    "referral_share": t.referral_share,
                    "team_support": t.team_support,
                },
                "results_so_far": {
                    "placements": _ytd_value(ytd.placements, threshold),
                    "new_registrations": _ytd_value(ytd.new_registrations, threshold),
                    "referral_share": share
                    if _ytd_value(ytd.referred, threshold) is not None
                    and _ytd_value(ytd.new_registrations, threshold) is not None
                    else None,
                    "team_support": _ytd_value(ytd.team_support, threshold),
                },
                "met": met,
                "achievement": cls.value,
            }
        )
    body = {
        "authority": feed.authority,
        "month": str(feed.month),
        "threshold": threshold,
        "classification_version": CLASSIFICATION_VERSION,
        "sites": list(feed.sites),
        "groups": {g: _table_json(s, reasons) for g, s in groups.items()},
        "indicators": ind,
        "targets": target_rows,
    }
    suppressed = [[ref.table, list(ref.key)] for s in groups.values() for ref in sorted(s.suppressed)]
    return Composed(body=body, suppressed=suppressed, figures=figures(body))


def figures(body: Mapping[str, Any]) -> dict[str, Any]:
    """Every published figure of a body by a stable name, for comparing revisions."""
    out: dict[str, Any] = {}
    for tables in body["groups"].values():
        for t in tables:
            for key, value, _ in t["cells"]:
                out[f"{t['name']}[{', '.join(key)}]"] = value
    for name, value in body["indicators"]["authority"].items():
        out[f"indicator: {name}"] = value
    for site, values in body["indicators"]["sites"].items():
        for name, value in values.items():
            out[f"indicator {site}: {name}"] = value
    for row in body["targets"]:
        for name, value in row["results_so_far"].items():
            out[f"target {row['site']} FY{row['fiscal_year']}: {name}"] = value
        out[f"target {row['site']} FY{row['fiscal_year']}: achievement"] = row["achievement"]
    return out
