"""A feed revision's body as the portal shows it: cross-tables with the Japanese statistical marks,
indicators, what changed between revisions, and the monthly series a chart draws.

Marks (the convention of Japanese official statistics, explained in the page's legend):
``x`` — a figure kept secret (秘匿) by disclosure control; ``－`` — zero, or not applicable (a rate
whose base is zero). A hidden figure is never derived here: a rate whose count is hidden is ``x`` too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.feed.delivery import LABELS_JA
from domain.calendar import AgeBand
from hub.web.i18n import N_, current, gettext, num, pct, short_month

SUPPRESSED = "x"
NIL = "－"
TOTAL = "計"

GROUPS = {
    "placements": N_("Placements"),
    "registrations": N_("New job seekers"),
    "retention": N_("Retention after placement"),
}
DIMENSIONS = {
    "site": N_("Site"),
    "attribute": N_("Attribute"),
    "sex": N_("Sex"),
    "age_band": N_("Age band"),
    "occupation": N_("Occupation"),
    "employment_type": N_("Employment type"),
    "route": N_("Route"),
    "referred": N_("Referred by the authority"),
    "team_support": N_("Team support"),
    "checkpoint": N_("Checkpoint"),
    "status": N_("Status"),
    "group": N_("Target group"),
}
INDICATORS = {
    "new_registrations": N_("New job seekers"),
    "referred_by_authority": N_("Referred by the authority"),
    "referral_share": N_("Referral share (coordination indicator)"),
    "placements": N_("Placements (via Hello Work referral)"),
    "placement_rate": N_("Placement rate"),
    "team_support": N_("People in team support"),
}
RETENTION = {
    "cohort": N_("Retention at %(k)s months: people due"),
    "employed": N_("Retention at %(k)s months: still employed"),
    "rate": N_("Retention at %(k)s months: rate"),
}
RATES = {  # a rate and the counts it is computed from (numerator, denominator)
    "referral_share": ("referred_by_authority", "new_registrations"),
    "placement_rate": ("placements", "new_registrations"),
    **{f"retention_{k}m_rate": (f"retention_{k}m_employed", f"retention_{k}m_cohort") for k in (1, 3, 6)},
}
ACHIEVEMENT = {"all_met": N_("All met"), "partly_met": N_("Partly met"), "none_met": N_("None met")}
CHANGE = {
    "changed": N_("changed"),
    "suppressed": N_("now hidden"),
    "published": N_("now published"),
    "added": N_("added"),
}
_RETENTION_NAME = re.compile(r"retention_(\d+)m_(cohort|employed|rate)")


def category(dim: str, code: str) -> str:
    if code == TOTAL:
        return TOTAL if current() == "ja" else gettext("Total")
    if current() == "ja":
        return LABELS_JA.get(dim, {}).get(code, code)
    if dim == "age_band":
        try:
            return AgeBand(code).label_en
        except ValueError:
            return code
    if dim == "site" and code == "other_sites":
        return gettext("Other authorities' sites")
    if dim == "checkpoint":
        return code
    return code.replace("_", " ")


def dimension(dim: str) -> str:
    return gettext(DIMENSIONS[dim]) if dim in DIMENSIONS else dim


def indicator(name: str) -> str:
    if name in INDICATORS:
        return gettext(INDICATORS[name])
    if m := _RETENTION_NAME.fullmatch(name):
        return gettext(RETENTION[m[2]]) % {"k": m[1]}
    return name


def is_rate(name: str) -> bool:
    return name in RATES


def mark(value: Any, *, rate: bool = False) -> str:
    """One published figure: ``x`` hidden, ``－`` zero, else the number with separators."""
    if value is None:
        return SUPPRESSED
    if value == 0:
        return NIL
    return pct(float(value)) if rate else num(value)


def indicator_mark(values: Mapping[str, Any], name: str) -> str:
    value = values.get(name)
    if value is None and name in RATES:
        numerator, denominator = RATES[name]
        if values.get(numerator) is not None and values.get(denominator) == 0:
            return NIL  # base zero: not applicable, nothing hidden
    return mark(value, rate=is_rate(name))


@dataclass
class Cell:
    text: str
    hidden: bool
    reason: str | None = None


@dataclass
class TableView:
    name: str
    title: str
    dims: list[str]
    columns: list[str]  # labels of the column categories (one "" column for a one-way table)
    rows: list[tuple[str, list[Cell]]] = field(default_factory=list)
    by_site: bool = False


def _order(keys: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(keys))
    return [k for k in seen if k != TOTAL] + ([TOTAL] if TOTAL in seen else [])


def table_view(table: Mapping[str, Any], group: str) -> TableView:
    dims = list(table["dims"])
    values = {tuple(key): (value, reason) for key, value, reason in table["cells"]}
    title = " × ".join(dimension(d) for d in dims)
    if len(dims) == 1:
        view = TableView(table["name"], title, dims, [gettext(GROUPS.get(group, group))])
        for k in _order([key[0] for key in values]):
            value, reason = values[(k,)]
            view.rows.append((category(dims[0], k), [Cell(mark(value), value is None, reason)]))
        return view
    row_keys = _order([key[0] for key in values])
    col_keys = _order([key[1] for key in values])
    view = TableView(table["name"], title, dims, [category(dims[1], c) for c in col_keys])
    view.by_site = dims[0] == "site"
    for r in row_keys:
        cells = []
        for c in col_keys:
            value, reason = values.get((r, c), (0, None))
            cells.append(Cell(mark(value), value is None, reason))
        view.rows.append((category(dims[0], r), cells))
    return view


def group_views(body: Mapping[str, Any]) -> list[tuple[str, str, list[TableView]]]:
    """(group key, group title, its tables), site tables first within each group."""
    out = []
    for group, tables in body["groups"].items():
        views = [table_view(t, group) for t in tables]
        views.sort(key=lambda v: not v.by_site)
        out.append((group, gettext(GROUPS[group]) if group in GROUPS else group, views))
    return out


def indicator_rows(body: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Indicators: columns the authority then each site, one row per indicator."""
    authority = body["indicators"]["authority"]
    sites = body["indicators"]["sites"]
    columns = [gettext("Whole authority"), *sites]
    rows = []
    for name in authority:
        cells = [indicator_mark(authority, name)]
        cells += [indicator_mark(values, name) if name in values else NIL for values in sites.values()]
        rows.append((indicator(name), cells))
    return columns, rows


# --- what changed between revisions ---------------------------------------------------------------------

_CELL_NAME = re.compile(r"(?P<table>[^\[]+)\[(?P<key>.*)\]")


def figure_label(name: str) -> str:
    """A figure's name in a change summary (``placements: attribute × sex[youth, 計]``, ``indicator:
    placements``, ``target 131041-01 FY2025: placements``) in the page's language."""
    if m := _CELL_NAME.fullmatch(name):
        group, _, dims_text = m["table"].partition(": ")
        dims = [d.strip() for d in dims_text.split("×")]
        keys = [k.strip() for k in m["key"].split(",")]
        parts = [f"{dimension(d)}={category(d, k)}" for d, k in zip(dims, keys, strict=False) if k != TOTAL]
        head = gettext(GROUPS[group]) if group in GROUPS else group
        table = " × ".join(dimension(d) for d in dims)
        return f"{head}（{table}）: {', '.join(parts) if parts else category('', TOTAL)}"
    if name.startswith("indicator"):
        scope, _, figure = name.partition(": ")
        site = scope.removeprefix("indicator").strip()
        return f"{indicator(figure)}{f' ({site})' if site else ''}"
    if name.startswith("target "):
        scope, _, figure = name.partition(": ")
        return f"{gettext('Target')} {scope.removeprefix('target ')}: {indicator(figure)}"
    return name


def change_rows(changes: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for c in changes:
        rate = str(c["figure"]).rsplit(": ", 1)[-1] in RATES
        rows.append(
            {
                "figure": figure_label(str(c["figure"])),
                "change": gettext(CHANGE.get(str(c["change"]), str(c["change"]))),
                "kind": str(c["change"]),
                "before": mark(c["before"], rate=rate) if "before" in c else "",
                "after": mark(c["after"], rate=rate) if "after" in c else "",
            }
        )
    return rows


# --- the year on a chart ----------------------------------------------------------------------------------

CHARTED = ("new_registrations", "placements", "referral_share", "team_support")


@dataclass
class Series:
    indicator: str
    title: str
    rate: bool
    points: list[tuple[str, float | None, bool]]  # (month label, value, hidden)
    pace: list[float | None]  # target pace per month: yearly target / 12, or the target share


def yearly_series(months: Sequence[str], bodies: Mapping[str, Mapping[str, Any]]) -> list[Series]:
    """The last months' authority indicators, with the target pace the sites' targets imply."""
    out = []
    for name in CHARTED:
        points: list[tuple[str, float | None, bool]] = []
        pace: list[float | None] = []
        for m in months:
            body = bodies.get(m)
            label = short_month(m)
            if body is None:
                points.append((label, None, False))
                pace.append(None)
                continue
            value = body["indicators"]["authority"].get(name)
            points.append((label, None if value is None else float(value), value is None))
            pace.append(_pace(body, name))
        out.append(Series(name, indicator(name), is_rate(name), points, pace))
    return out


def _pace(body: Mapping[str, Any], name: str) -> float | None:
    targets = [t["targets"].get(name) for t in body.get("targets", [])]
    set_ = [float(t) for t in targets if t is not None]
    if not set_:
        return None
    if is_rate(name):
        return sum(set_) / len(set_)  # the sites' target shares, averaged
    return sum(set_) / 12  # a yearly count target, per month
