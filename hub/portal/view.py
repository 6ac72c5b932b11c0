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
from datetime import date
from typing import Any

from consumers.feed.delivery import LABELS_JA
from domain.calendar import AgeBand
from hub.web.i18n import N_, current, day, gettext, num, pct, short_month

SUPPRESSED = "x"
NIL = "－"
TOTAL = "計"

# Table groups of a body: today's "groups", and the "populations" of the feed's newer bodies.
GROUPS = {
    "placements": N_("Placements"),
    "registrations": N_("New job seekers"),
    "retention": N_("Retention after placement"),
    "referral_placements": N_("Placements via Hello Work referral"),
    "self_found_placements": N_("Self-found placements"),
    "new_job_seekers": N_("New job seekers"),
    "team_support": N_("New people in team support"),
    "retention_1m": N_("Retention at 1 month"),
    "retention_3m": N_("Retention at 3 months"),
    "retention_6m": N_("Retention at 6 months"),
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
    "enrolment": N_("Team support from"),
    "checkpoint": N_("Checkpoint"),
    "status": N_("Status"),
    "group": N_("Target group"),
}
TARGET_GROUPS = {  # the programme's target groups (a person counts in each group they belong to)
    "welfare": N_("Public assistance recipients etc."),
    "disability": N_("People with disabilities"),
    "parenting": N_("People raising children"),
    "youth": N_("Young people"),
    "women": N_("Women"),
    "middle_aged": N_("Middle-aged and older"),
    "foreign": N_("Foreign nationals"),
    "general": N_("General"),
    "other": N_("Other"),
}
INDICATORS = {
    "new_registrations": N_("New job seekers"),
    "new_job_seekers": N_("New job seekers"),
    "referred_by_authority": N_("Referred by the authority"),
    "referral_share": N_("Referral share (coordination indicator)"),
    "placements": N_("Placements (via Hello Work referral)"),
    "referral_placements": N_("Placements (via Hello Work referral)"),
    "self_found_placements": N_("Self-found placements"),
    "confirmed_placements": N_("Confirmed placements (incl. self-found)"),
    "regular_placements": N_("Placements as regular employees"),
    "placement_rate": N_("Placement rate"),
    "team_support": N_("People in team support"),
}
RETENTION = {
    "cohort": N_("Retention at %(k)s months: people due"),
    "employed": N_("Retention at %(k)s months: still employed"),
    "rate": N_("Retention at %(k)s months: rate"),
}
RATES = {  # a rate and the counts it is computed from (numerator, denominator), in either body layout
    "referral_share": (("referred_by_authority",), ("new_registrations", "new_job_seekers")),
    "placement_rate": (("placements", "referral_placements"), ("new_registrations", "new_job_seekers")),
    **{
        f"retention_{k}m_rate": ((f"retention_{k}m_employed",), (f"retention_{k}m_cohort",))
        for k in (1, 3, 6)
    },
}
ACHIEVEMENT = {"all_met": N_("All met"), "partly_met": N_("Partly met"), "none_met": N_("None met")}
PACE = {"on_pace": N_("On pace"), "behind": N_("Behind")}
CHANGE = {
    "changed": N_("changed"),
    "suppressed": N_("now hidden"),
    "published": N_("now published"),
    "added": N_("added"),
}
_RETENTION_NAME = re.compile(r"retention_([0-9]+)m_(cohort|employed|rate)")


def category(dim: str, code: str) -> str:
    if code == TOTAL:
        return TOTAL if current() == "ja" else gettext("Total")
    if dim.startswith("group:") and code in ("yes", "no"):
        return gettext("in the group") if code == "yes" else gettext("not in the group")
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
    if dim.startswith("group:"):
        return f"{gettext(DIMENSIONS['group'])}: {target_group(dim[6:])}"
    return gettext(DIMENSIONS[dim]) if dim in DIMENSIONS else dim


def target_group(code: str) -> str:
    return gettext(TARGET_GROUPS[code]) if code in TARGET_GROUPS else code


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
        numerators, denominators = RATES[name]
        numerator = next((values[n] for n in numerators if n in values), None)
        denominator = next((values[d] for d in denominators if d in values), None)
        if numerator is not None and denominator == 0:
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


def table_groups(body: Mapping[str, Any]) -> Mapping[str, Any]:
    groups: Mapping[str, Any] = body.get("populations") or body.get("groups") or {}
    return groups


def group_views(body: Mapping[str, Any]) -> list[tuple[str, str, list[TableView]]]:
    """(group key, group title, its tables), site tables first within each group."""
    out = []
    for group, tables in table_groups(body).items():
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
        if isinstance(authority[name], Mapping):
            continue  # by target group: a table of its own
        cells = [indicator_mark(authority, name)]
        cells += [indicator_mark(values, name) if name in values else NIL for values in sites.values()]
        rows.append((indicator(name), cells))
    return columns, rows


GROUP_FIGURES = ("new_job_seekers", "referral_placements", "placement_rate")


def target_group_rows(values: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """Indicators by target group (a person counts in every group they belong to), where the feed
    gives them: rows the groups, columns new job seekers, placements and the placement rate."""
    by_group = values.get("by_group")
    if not isinstance(by_group, Mapping):
        return []
    return [
        (target_group(g), [indicator_mark(figures, name) for name in GROUP_FIGURES])
        for g, figures in by_group.items()
    ]


def group_tables(body: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """(scope, rows) for the whole authority and each site: the per-group tables."""
    scopes = [(gettext("Whole authority"), body["indicators"]["authority"])]
    scopes += list(body["indicators"]["sites"].items())
    return [(scope, rows) for scope, values in scopes if (rows := target_group_rows(values))]


def target_rows(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """The fiscal year's targets, their results so far and the unit's pace or class, in either layout
    of a body: per site with a dict of targets, or per scope with a list of target evaluations."""
    rows = []
    for unit in body.get("targets", []):
        scope = str(unit.get("scope") or unit.get("site"))
        standing = unit.get("achievement")
        status = gettext(ACHIEVEMENT[standing]) if standing in ACHIEVEMENT else ""
        if not status and unit.get("pace") in PACE:
            status = gettext(PACE[unit["pace"]])
        if isinstance(unit.get("targets"), Mapping):
            items = [(k, v, unit.get("results_so_far", {}).get(k), None) for k, v in unit["targets"].items()]
        else:
            items = [(t["kind"], t.get("value"), t.get("result"), t.get("group")) for t in unit["targets"]]
        for kind, value, result, group in items:
            if value is None:
                continue
            rate = is_rate(str(kind))
            name = indicator(str(kind)) + (f"（{target_group(group)}）" if group else "")
            rows.append({"scope": scope, "fiscal_year": str(unit.get("fiscal_year", "")), "name": name,
                         "target": mark(value, rate=rate), "result": mark(result, rate=rate), "status": status})  # fmt: skip
    return rows


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
        if figure.startswith("by_group."):  # indicator: by_group.youth.placement_rate
            _, group, figure = figure.split(".", 2)
            figure = f"{indicator(figure)}（{target_group(group)}）"
        else:
            figure = indicator(figure)
        return f"{figure}{f' ({site})' if site else ''}"
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

# Charted indicators, each as named in today's bodies or in the feed's newer ones.
CHARTED = (
    ("new_registrations", "new_job_seekers"),
    ("placements", "referral_placements"),
    ("referral_share",),
    ("team_support",),
)


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
    present = {n for b in bodies.values() for n in b["indicators"]["authority"]}
    for names in CHARTED:
        name = next((n for n in names if n in present), names[0])
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
    """Sites' (or, in newer bodies, each scope's own) yearly targets of this indicator, summed."""
    by_scope: dict[str, list[Any]] = {}
    for unit in body.get("targets", []):
        scope = str(unit.get("scope") or unit.get("site"))
        if isinstance(unit.get("targets"), Mapping):
            by_scope.setdefault(scope, []).append(unit["targets"].get(name))
        else:
            by_scope.setdefault(scope, []).extend(
                t.get("value") for t in unit["targets"] if t["kind"] == name and not t.get("group")
            )
    own = by_scope.get(str(body.get("authority")))  # an authority-wide target, where set, is the pace
    targets = own if own and any(t is not None for t in own) else [t for ts in by_scope.values() for t in ts]
    set_ = [float(t) for t in targets if t is not None]
    if not set_:
        return None
    if is_rate(name):
        return sum(set_) / len(set_)  # the sites' target shares, averaged
    return sum(set_) / 12  # a yearly count target, per month


# The feed's individual list writes a retention checkpoint as "1m employed (2023-03-06)" (its JSON and CSV
# are read by authority systems, so that form stays); the portal says it in the page's language.
_CHECKPOINT = re.compile(r"([136])m (employed|left) \(([0-9]{4}-[0-9]{2}-[0-9]{2})\)")


def retention_label(text: str | None) -> str:
    """A retention checkpoint in the page's language: 1か月確認：就労継続（令和5年3月6日）."""
    if not text:
        return "－"
    found = _CHECKPOINT.fullmatch(text)
    if found is None:  # not a form this page knows: shown as the feed has it
        return text
    k, status, on = found.groups()
    values = {"k": k, "day": day(date.fromisoformat(on))}
    if status == "employed":
        return gettext("%(k)s-month check: still employed (%(day)s)") % values
    return gettext("%(k)s-month check: left (%(day)s)") % values
