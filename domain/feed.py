"""Arithmetic of the monthly placement feed (就職実績の提供): who counts, what is counted, indicators,
site targets and what changed between revisions. No I/O: the builder feeds plain facts in.

Who counts for an authority (the one rule, ``counts_for``): a person's event counts for authority A when
it happened at one of A's joint sites (拠点; a site id starts with the running authority's code), or
when A referred the person (送り込み). A placement of someone A referred, made at a site of another
authority, is counted in A's whole-authority figures under the site category ``OTHER_SITES``.

Attribute categories (属性): a person may hold several; every table counts a placement once, under its
*main attribute*, the first category listed on the event (the form lists the attribute the person was
registered for first). So attribute tables add up to the number of placements like every other table.

Ages: the placement event carries the Hello Work age band on the placement date (年齢階級, five-year
bands); ``age_band_on_placement`` computes it where a source gives a birth date instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Any

from domain.calendar import AgeBand, YearMonth, age_band, age_on, fiscal_year, month_bounds
from domain.disclosure import (
    TOTAL,
    CellRef,
    SuppressedFeed,
    Table,
    revise,
    suppress_many,
    tables_from_counts,
)
from domain.occupation import CLASSIFICATION_VERSION

JST = timezone(timedelta(hours=9), "JST")
OTHER_SITES = "other_sites"  # placements of people the authority referred, made at another authority's site

SEXES = ("male", "female", "not_stated")
ATTRIBUTES = (
    "public_assistance",
    "child_rearing_allowance",
    "housing_benefit",
    "needy_person_support",
    "disability",
    "youth",
    "parenting",
    "general",
)
OCCUPATIONS = tuple(f"{i:02d}" for i in range(1, 16))
EMPLOYMENT_TYPES = ("regular_full_time", "non_regular_full_time", "part_time", "temporary")
ROUTES = ("hello_work_referral", "self_found")
AGE_BANDS = tuple(b.value for b in AgeBand)
YES_NO = ("yes", "no")

ONE_WAY = ("attribute", "sex", "age_band", "occupation", "employment_type", "route")
# The cross-tables an authority asks for (属性別・職種別・男女別・年齢階級別, each by sex; attribute by route).
CROSS = (
    ("attribute", "sex"),
    ("occupation", "sex"),
    ("age_band", "sex"),
    ("employment_type", "sex"),
    ("attribute", "route"),
)
RETENTION_CHECKPOINTS = (1, 3, 6)
RETENTION_STATUS = ("employed", "left", "not_reported")


def counts_for(authority: str, site: str, referred_by: Iterable[str]) -> bool:
    """The rule: an event at ``site`` about a person referred by ``referred_by`` counts for ``authority``."""
    return site[:6] == authority or authority in referred_by


def main_attribute(attributes: Sequence[str]) -> str:
    """The category a person is counted under: the first one listed."""
    if not attributes:
        raise ValueError("a placement needs at least one attribute category")
    return attributes[0]


def age_band_on_placement(birth: date, placed_on: date) -> AgeBand:
    return age_band(age_on(birth, placed_on))


# --- closing ---------------------------------------------------------------------------------------


def cutoff_instant(month: YearMonth, cutoff_day: int) -> datetime:
    """End of the cutoff day (JST) in the month after ``month``: events sent up to then are in revision 1."""
    y, m = (month.year + 1, 1) if month.month == 12 else (month.year, month.month + 1)
    return datetime.combine(date(y, m, cutoff_day) + timedelta(days=1), time(0), JST).astimezone(UTC)


def is_closed(month: YearMonth, cutoff_day: int, now: datetime) -> bool:
    return now >= cutoff_instant(month, cutoff_day)


def shift_month(month: YearMonth, delta: int) -> YearMonth:
    y, m = divmod(month.year * 12 + month.month - 1 + delta, 12)
    return YearMonth(y, m + 1)


# --- facts --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlacementFact:
    placement_id: str
    person_key: str
    site: str
    placed_on: date
    route: str
    occupation: str
    employment_type: str
    sex: str
    age_band: str
    attributes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RegistrationFact:
    person_key: str
    site: str
    registered_on: date
    team_support: bool
    referred: bool  # referred by the authority running the site (送り込み)


@dataclass(frozen=True, slots=True)
class RetentionFact:
    placement_id: str
    checkpoint_months: int
    status: str  # employed | left


@dataclass(frozen=True)
class FeedInput:
    """Everything counted for one authority and month, as of one horizon."""

    authority: str
    month: YearMonth
    sites: tuple[str, ...]  # the authority's own sites
    placements: tuple[PlacementFact, ...]  # placed in the month, counted for the authority
    registrations: tuple[RegistrationFact, ...]  # new registrations in the month at its sites
    # Retention cohorts: placements counted for the authority in month − k, per checkpoint k.
    cohorts: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    retention: Mapping[tuple[str, int], str] = field(default_factory=dict)  # (placement, k) -> status
    layout: tuple[str, ...] | None = None  # own sites of revision 1's tables; None: revision 1 itself


def site_category(authority: str, site: str, layout: Sequence[str] | None = None) -> str:
    """A site's category in its authority's tables: the site number ("01" for 131041-01), so feeds of
    authorities with the same number of sites share one table layout. Other authorities' sites, and own
    sites the feed's layout does not list (first seen after its revision 1), are one category."""
    if site[:6] != authority or (layout is not None and site not in layout):
        return OTHER_SITES
    return site[7:]


def layout_sites(feed: FeedInput) -> tuple[str, ...]:
    """The own sites the feed's tables break down by: fixed at revision 1 (``FeedInput.layout``), so
    every revision of a month has the same tables, which is what makes revisions safe to compare
    (``domain.disclosure.revise``)."""
    return feed.layout if feed.layout is not None else feed.sites


def site_categories(feed: FeedInput) -> list[str]:
    """Own site numbers, then ``OTHER_SITES`` (always present, so the layout never changes when a
    placement at another authority's site arrives late)."""
    return [site_category(feed.authority, s) for s in layout_sites(feed)] + [OTHER_SITES]


def placement_record(authority: str, p: PlacementFact) -> dict[str, str]:
    return {
        "site": site_category(authority, p.site),
        "attribute": main_attribute(p.attributes),
        "sex": p.sex,
        "age_band": p.age_band,
        "occupation": p.occupation,
        "employment_type": p.employment_type,
        "route": p.route,
    }


def placement_layout() -> list[tuple[str, ...]]:
    """One-way and cross-tables, and site × each one-way dimension (its rows are the site feeds, its
    column margins the authority's one-way tables)."""
    return [(d,) for d in ONE_WAY] + [tuple(c) for c in CROSS] + [("site", d) for d in ONE_WAY]


def placement_tables(feed: FeedInput) -> tuple[Table, ...]:
    sites = site_categories(feed)
    categories: dict[str, Sequence[str]] = {
        "site": sites,
        "attribute": ATTRIBUTES,
        "sex": SEXES,
        "age_band": AGE_BANDS,
        "occupation": OCCUPATIONS,
        "employment_type": EMPLOYMENT_TYPES,
        "route": ROUTES,
    }
    layout = layout_sites(feed)
    # Counted as category tuples in the order of ``categories`` (as ``placement_record`` would give them).
    combinations: Counter[tuple[str, ...]] = Counter(
        (
            site_category(feed.authority, p.site, layout),
            main_attribute(p.attributes),
            p.sex,
            p.age_band,
            p.occupation,
            p.employment_type,
            p.route,
        )
        for p in feed.placements
    )
    return _prefixed("placements", tables_from_counts(combinations, categories, placement_layout()))


def registration_tables(feed: FeedInput) -> tuple[Table, ...]:
    """New registrations by referral (送り込み) and by team support (チーム支援), and per site."""
    categories: dict[str, Sequence[str]] = {
        "site": site_categories(feed),
        "referred": YES_NO,
        "team_support": YES_NO,
    }
    layout = layout_sites(feed)
    flags = Counter((r.site, r.referred, r.team_support) for r in feed.registrations)
    combinations: Counter[tuple[str, ...]] = Counter()
    for (site, referred, team), n in flags.items():
        combinations[
            (
                site_category(feed.authority, site, layout),
                "yes" if referred else "no",
                "yes" if team else "no",
            )
        ] += n
    tables: list[tuple[str, ...]] = [
        ("referred",),
        ("team_support",),
        ("site", "referred"),
        ("site", "team_support"),
    ]
    return _prefixed("registrations", tables_from_counts(combinations, categories, tables))


def retention_tables(feed: FeedInput) -> tuple[Table, ...]:
    """Checkpoint × status for earlier placements: at k months, those placed in month − k."""
    cells: dict[tuple[str, ...], int] = {}
    for k in RETENTION_CHECKPOINTS:
        counts = dict.fromkeys(RETENTION_STATUS, 0)
        for pid in feed.cohorts.get(k, ()):
            counts[feed.retention.get((pid, k), "not_reported")] += 1
        for status, n in counts.items():
            cells[(f"{k}m", status)] = n
    return (Table(name="retention: checkpoint × status", dims=("checkpoint", "status"), cells=cells),)


def _prefixed(group: str, tables: Iterable[Table]) -> tuple[Table, ...]:
    return tuple(Table(name=f"{group}: {t.name}", dims=t.dims, cells=t.cells) for t in tables)


# --- indicators ---------------------------------------------------------------------------------------


def _ratio(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, 4)


def _cell(feed: SuppressedFeed, table: str, key: tuple[str, ...]) -> int | None:
    ref = CellRef(table, key)
    return feed.cells[ref].value if ref in feed.cells else None


def indicators(
    placements: SuppressedFeed, registrations: SuppressedFeed, retention: SuppressedFeed, site: str | None
) -> dict[str, int | float | None]:
    """The programme's indicators for the authority (``site`` None) or one site, read from the published
    (suppressed) cells so an indicator never shows what a table hides; None where a count is hidden."""
    multi_p = any(t.dims == ("site", "route") for t in placements.tables)
    multi_r = any(t.dims == ("site", "referred") for t in registrations.tables)
    if site is not None:
        site = site[7:]  # its category in the tables (see site_category); absent if not in the layout
    if site is None:
        placed = _cell(placements, "placements: route", (TOTAL,))
        new = _cell(registrations, "registrations: referred", (TOTAL,))
        referred = _cell(registrations, "registrations: referred", ("yes",))
        team = _cell(registrations, "registrations: team_support", ("yes",))
    else:
        placed = (
            _cell(placements, "placements: site × route", (site, TOTAL))
            if multi_p
            else _cell(placements, "placements: route", (TOTAL,))
        )
        if multi_r:
            new = _cell(registrations, "registrations: site × referred", (site, TOTAL))
            referred = _cell(registrations, "registrations: site × referred", (site, "yes"))
            team = _cell(registrations, "registrations: site × team_support", (site, "yes"))
        else:
            new = _cell(registrations, "registrations: referred", (TOTAL,))
            referred = _cell(registrations, "registrations: referred", ("yes",))
            team = _cell(registrations, "registrations: team_support", ("yes",))
    out: dict[str, int | float | None] = {
        "new_registrations": new,
        "referred_by_authority": referred,
        "referral_share": _ratio(referred, new),  # 連携指標: share of new job seekers the authority sent
        "placements": placed,
        "placement_rate": _ratio(placed, new),
        "team_support": team,
    }
    if site is None:
        name = "retention: checkpoint × status"
        for k in RETENTION_CHECKPOINTS:
            cohort = _cell(retention, name, (f"{k}m", TOTAL))
            employed = _cell(retention, name, (f"{k}m", "employed"))
            out[f"retention_{k}m_cohort"] = cohort
            out[f"retention_{k}m_employed"] = employed
            out[f"retention_{k}m_rate"] = _ratio(employed, cohort)
    return out


# --- targets --------------------------------------------------------------------------------------------


class Achievement(StrEnum):
    ALL_MET = "all_met"  # 全て達成
    PARTLY_MET = "partly_met"  # 一部達成
    NONE_MET = "none_met"  # 未達成


@dataclass(frozen=True, slots=True)
class SiteTargets:
    """A site's yearly targets (目標) set by its steering council (運営協議会) for a fiscal year."""

    site: str
    fiscal_year: int
    placements: int | None = None
    referral_share: float | None = None  # fraction 0..1 of new job seekers sent by the authority
    team_support: int | None = None

    def __post_init__(self) -> None:
        if self.placements is not None and self.placements < 0:
            raise ValueError(f"placements target {self.placements} is negative")
        if self.team_support is not None and self.team_support < 0:
            raise ValueError(f"team_support target {self.team_support} is negative")
        if self.referral_share is not None and not 0 <= self.referral_share <= 1:
            raise ValueError(f"referral_share target {self.referral_share} must be a fraction from 0 to 1")
        if self.placements is None and self.referral_share is None and self.team_support is None:
            raise ValueError("set at least one target: placements, referral_share or team_support")


@dataclass(frozen=True, slots=True)
class YearToDate:
    """Results of a site from April of the fiscal year to the end of the feed's month."""

    placements: int
    new_registrations: int
    referred: int
    team_support: int

    @property
    def referral_share(self) -> float | None:
        return _ratio(self.referred, self.new_registrations)


def achievement(targets: SiteTargets, results: YearToDate) -> tuple[Achievement, dict[str, bool]]:
    """Each set target is met when the result so far reaches it; the class is all / some / none met."""
    met: dict[str, bool] = {}
    if targets.placements is not None:
        met["placements"] = results.placements >= targets.placements
    if targets.referral_share is not None:
        share = results.referral_share
        met["referral_share"] = share is not None and share >= targets.referral_share
    if targets.team_support is not None:
        met["team_support"] = results.team_support >= targets.team_support
    if all(met.values()):
        return Achievement.ALL_MET, met
    return (Achievement.PARTLY_MET if any(met.values()) else Achievement.NONE_MET), met


def fiscal_months(month: YearMonth) -> tuple[date, date]:
    """From 1 April of ``month``'s fiscal year (年度) to the last day of ``month``."""
    first, last = month_bounds(month)
    return date(fiscal_year(first), 4, 1), last


# --- revisions --------------------------------------------------------------------------------------------

Published = Mapping[str, object]  # figure name -> published value (None = hidden)


def change_summary(before: Published, after: Published) -> list[dict[str, object]]:
    """What changed from one revision to the next, without ever showing a hidden value.

    A figure published in both revisions is shown old → new; a figure hidden in the new revision is
    reported as newly suppressed with no values; figures hidden in both are not mentioned (a hidden cell
    stays hidden in later revisions, so nothing becomes visible).
    """
    changes: list[dict[str, object]] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if new is None and old is None:
            continue
        if new is None:
            changes.append({"figure": name, "change": "suppressed"})
        elif old is None and name in before:
            # Hidden before, published now: only an indicator derived from a count can do this
            # (cells keep their suppression), and only its ratio moved; report without the old value.
            changes.append({"figure": name, "change": "published", "after": new})
        elif old is None:
            changes.append({"figure": name, "change": "added", "after": new})
        else:
            changes.append({"figure": name, "change": "changed", "before": old, "after": new})
    return changes


# --- composing a revision ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Composed:
    body: dict[str, Any]
    suppressed: list[list[Any]]  # [table, key] of every hidden cell, for the next revision
    figures: dict[str, Any]  # flat view for change summaries


def _table_json(feed: SuppressedFeed) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    by_table: dict[str, list[list[Any]]] = {}
    for ref, cell in feed.cells.items():
        reason = cell.reason.value if cell.reason else None
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
    """One feed to compose: its facts, the previous revision's body (None for revision 1), and the
    targets of its sites with their year-to-date results."""

    feed: FeedInput
    previous: Mapping[str, Any] | None = None
    targets: Sequence[SiteTargets] = ()
    year_to_date: Mapping[str, YearToDate] | None = None


def compose(
    feed: FeedInput,
    *,
    threshold: int,
    previous: Mapping[str, Any] | None = None,
    targets: Sequence[SiteTargets] = (),
    year_to_date: Mapping[str, YearToDate] | None = None,
) -> Composed:
    """Revision 1 (``previous`` None): suppression with the audit of ``domain.disclosure``. Later
    revisions: ``domain.disclosure.revise`` against the previous revision's published cells, on the
    layout revision 1 fixed."""
    return compose_many([Job(feed, previous, targets, year_to_date)], threshold=threshold)[0]


_GROUPS = ("placements", "registrations", "retention")


def compose_many(jobs: Sequence[Job], *, threshold: int) -> list[Composed]:
    """``compose`` for several feeds; each gets exactly what ``compose`` gives it alone, but the
    revision-1 feeds are suppressed together (``suppress_many``) so that they share solver calls."""
    jobs = [_with_layout(j) for j in jobs]
    tables = [(placement_tables(j.feed), registration_tables(j.feed), retention_tables(j.feed)) for j in jobs]
    fresh = [n for n, j in enumerate(jobs) if j.previous is None]
    suppressed = iter(suppress_many([(t, frozenset()) for n in fresh for t in tables[n]], threshold))
    out = []
    for job, group_tables in zip(jobs, tables, strict=True):
        groups: dict[str, SuppressedFeed] = {}
        previous = previous_cells(job.previous) if job.previous is not None else None
        for group, t in zip(_GROUPS, group_tables, strict=True):
            if previous is None:
                groups[group] = next(suppressed)
            else:
                groups[group] = revise(t, threshold, previous)
        out.append(_finish(job, groups, threshold))
    return out


def _with_layout(job: Job) -> Job:
    """A later revision breaks down by the sites of revision 1 (its body's ``layout``)."""
    if job.previous is None:
        return job
    layout = tuple(job.previous.get("layout", job.previous["sites"]))
    return replace(job, feed=replace(job.feed, layout=layout))


def _finish(job: Job, groups: dict[str, SuppressedFeed], threshold: int) -> Composed:
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
        "layout": list(layout_sites(feed)),
        "groups": {g: _table_json(s) for g, s in groups.items()},
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
