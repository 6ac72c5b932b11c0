"""The ministry's view: a national and per-prefecture roll-up of a fiscal year, in the shape of the
FY2015 report's own tables (``shared/seed/000_710836a85c6b4b72.txt``):

* authorities and sites by achievement class (全達成 / 一部達成 / 未達成, and left out of the evaluation,
  ~l.12–15, 61–82);
* placements (紹介就職) by target group, every group a person belongs to, with the distinct total
  (~l.9–10, 909–932);
* the 連携指標: new job seekers, the share the authorities sent, people newly in team support
  (~l.103–105, 433–434), and 就職率 (~l.97–100).

Aggregates only, with the feed's disclosure control: the counts of people are protected tables (one
population each, every prefecture always present so the layout never changes and later revisions can
use ``domain.disclosure.revise``). Counts of authorities and sites by class are about public bodies,
not people, and are published in full. Each placement is counted once, at the site where it happened
(authority feeds may count it twice: at the site's authority and at the authority that referred the
person), from the true monthly counts each feed revision keeps (``domain.feed.site_tallies``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from domain.disclosure import TOTAL, CellRef, SuppressedFeed, Table, revise, suppress_many
from domain.feed import ACHIEVEMENT_JA, GROUP_LABELS_JA, TARGET_GROUPS, Tally, is_prefecture, ratio

PREFECTURE_CODES = tuple(f"{i:02d}" for i in range(1, 48))
PREFECTURE_NAMES = (
    "北海道", "青森県", "岩手県", "宮城県", "秋田県", "山形県", "福島県", "茨城県", "栃木県", "群馬県",
    "埼玉県", "千葉県", "東京都", "神奈川県", "新潟県", "富山県", "石川県", "福井県", "山梨県", "長野県",
    "岐阜県", "静岡県", "愛知県", "三重県", "滋賀県", "京都府", "大阪府", "兵庫県", "奈良県", "和歌山県",
    "鳥取県", "島根県", "岡山県", "広島県", "山口県", "徳島県", "香川県", "愛媛県", "高知県", "福岡県",
    "佐賀県", "長崎県", "熊本県", "大分県", "宮崎県", "鹿児島県", "沖縄県",
)  # fmt: skip
CLASSES = (
    "all_met",
    "partly_met",
    "none_met",
    "on_pace",
    "behind",
    "excluded",
)  # year end, mid-year, left out
TABLE_KEYS = {"authorities": "自治体の目標達成状況", "sites": "拠点の目標達成状況",
              "groups": "支援対象者別の就職件数", "coordination": "連携指標"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Unit:
    """A site or an authority with targets, and where it stands (``None``: no class yet)."""

    scope: str
    achievement: str | None  # all_met | partly_met | none_met | excluded | None (mid-year: see pace)
    pace: str | None = None  # on_pace | behind, before the year ends

    @property
    def state(self) -> str | None:
        return self.achievement or self.pace


def _prefecture(scope: str) -> str:
    return scope[:2]


def rollup_tables(tallies: Mapping[str, Tally]) -> dict[str, tuple[Table, ...]]:
    """The people counted in the roll-up, by prefecture of the site, as protected tables."""
    by_pref: dict[str, Tally] = {}
    for site, t in tallies.items():
        by_pref[_prefecture(site)] = by_pref.get(_prefecture(site), Tally()) + t
    zero = Tally()
    placed: list[Table] = []
    new: list[Table] = []
    for g, name in enumerate(TARGET_GROUPS):
        placed.append(
            Table(
                f"referral_placements: prefecture × group:{name}",
                ("prefecture", f"group:{name}"),
                {
                    (p, yn): (
                        t.group_placements[g]
                        if yn == "yes"
                        else t.referral_placements - t.group_placements[g]
                    )
                    for p in PREFECTURE_CODES
                    for t in (by_pref.get(p, zero),)
                    for yn in ("yes", "no")
                },
            )
        )
        new.append(
            Table(
                f"new_job_seekers: prefecture × group:{name}",
                ("prefecture", f"group:{name}"),
                {
                    (p, yn): (t.group_new[g] if yn == "yes" else t.new_job_seekers - t.group_new[g])
                    for p in PREFECTURE_CODES
                    for t in (by_pref.get(p, zero),)
                    for yn in ("yes", "no")
                },
            )
        )
    new.append(
        Table(
            "new_job_seekers: prefecture × referred",
            ("prefecture", "referred"),
            {
                (p, yn): (t.referred if yn == "yes" else t.new_job_seekers - t.referred)
                for p in PREFECTURE_CODES
                for t in (by_pref.get(p, zero),)
                for yn in ("yes", "no")
            },
        )
    )
    placed.append(
        Table(
            "referral_placements: prefecture × employment",
            ("prefecture", "employment"),
            {
                (p, k): (
                    t.regular_placements if k == "regular" else t.referral_placements - t.regular_placements
                )
                for p in PREFECTURE_CODES
                for t in (by_pref.get(p, zero),)
                for k in ("regular", "other")
            },
        )
    )
    team = (
        Table(
            "team_support: prefecture",
            ("prefecture",),
            {(p,): by_pref.get(p, zero).team_support for p in PREFECTURE_CODES},
        ),
    )
    self_found = (
        Table(
            "self_found_placements: prefecture",
            ("prefecture",),
            {(p,): by_pref.get(p, zero).self_found_placements for p in PREFECTURE_CODES},
        ),
    )
    return {
        "referral_placements": tuple(placed),
        "new_job_seekers": tuple(new),
        "team_support": team,
        "self_found_placements": self_found,
    }


def achievement_counts(units: Iterable[Unit]) -> dict[str, dict[str, int]]:
    """Units by class per prefecture and nationally (``計``); units without a class are not counted."""
    out: dict[str, Counter[str]] = {p: Counter() for p in (*PREFECTURE_CODES, TOTAL)}
    for u in units:
        if u.state is None:
            continue
        out[_prefecture(u.scope)][u.state] += 1
        out[TOTAL][u.state] += 1
    return {p: {c: counts[c] for c in CLASSES} for p, counts in out.items()}


def _get(pops: Mapping[str, SuppressedFeed], pop: str, table: str, key: tuple[str, ...]) -> int | None:
    cell = pops[pop].cells.get(CellRef(f"{pop}: {table}", key))
    return None if cell is None else cell.value


def _indicators(pops: Mapping[str, SuppressedFeed], row: str) -> dict[str, Any]:
    placed = _get(pops, "referral_placements", "prefecture × employment", (row, TOTAL))
    new = _get(pops, "new_job_seekers", "prefecture × referred", (row, TOTAL))
    referred = _get(pops, "new_job_seekers", "prefecture × referred", (row, "yes"))
    self_found = _get(pops, "self_found_placements", "prefecture", (row,))
    by_group = {}
    for g in TARGET_GROUPS:
        n = _get(pops, "referral_placements", f"prefecture × group:{g}", (row, "yes"))
        by_group[g] = {"referral_placements": n, "share": ratio(n, placed)}
    return {
        "referral_placements": placed,
        "self_found_placements": self_found,
        "confirmed_placements": None if placed is None or self_found is None else placed + self_found,
        "new_job_seekers": new,
        "referred_by_authority": referred,
        "referral_share": ratio(referred, new),
        "placement_rate": ratio(placed, new),
        "regular_placements": _get(pops, "referral_placements", "prefecture × employment", (row, "regular")),
        "team_support": _get(pops, "team_support", "prefecture", (row,)),
        "by_group": by_group,
    }


def compose_rollup(
    fiscal_year: int,
    through: str,
    tallies: Mapping[str, Tally],
    sites: Sequence[Unit],
    authorities: Sequence[Unit],
    *,
    threshold: int,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The roll-up body of a fiscal year through month ``through`` (revision 1 suppressed with the audit;
    later ones revised against ``previous``, like a feed)."""
    tables = rollup_tables(tallies)
    if previous is None:
        done = dict(
            zip(tables, suppress_many([(t, frozenset()) for t in tables.values()], threshold), strict=True)
        )
    else:
        before = {
            CellRef(t["name"], tuple(k)): v
            for ts in previous["populations"].values()
            for t in ts
            for k, v, _ in t["cells"]
        }
        done = {name: revise(t, threshold, before) for name, t in tables.items()}
    populations = {
        name: [
            {
                "name": t.name,
                "dims": list(t.dims),
                "cells": [
                    [list(ref.key), c.value, c.reason.value if c.reason else None]
                    for ref, c in s.cells.items()
                    if ref.table == t.name
                ],
            }
            for t in s.tables
        ]
        for name, s in done.items()
    }
    return {
        "fiscal_year": fiscal_year,
        "through": through,
        "threshold": threshold,
        "achievement": {
            "authorities": achievement_counts(authorities),
            "sites": achievement_counts(sites),
            "authorities_by_kind": {
                kind: achievement_counts(
                    u for u in authorities if is_prefecture(u.scope) == (kind == "prefectures")
                )[TOTAL]
                for kind in ("prefectures", "municipalities")
            },
        },
        "indicators": {
            "national": _indicators(done, TOTAL),
            "prefectures": {p: _indicators(done, p) for p in PREFECTURE_CODES},
        },
        "populations": populations,
    }


# --- the report's tables, as rows (CSV and Excel) ---------------------------------------------------------


def report_tables(body: Mapping[str, Any]) -> dict[str, list[list[Any]]]:
    """The roll-up as the report's tables: one list of rows (header first) per table."""

    def label(p: str) -> str:
        return "全国" if p == TOTAL else PREFECTURE_NAMES[int(p) - 1]

    rows_order = [TOTAL, *PREFECTURE_CODES]
    out: dict[str, list[list[Any]]] = {}
    table: list[list[Any]]
    for key, title in (("authorities", "自治体の目標達成状況"), ("sites", "拠点の目標達成状況")):
        table = [
            [
                "都道府県",
                "評価対象",
                "達成（全達成＋一部達成）",
                "達成率",
                *(ACHIEVEMENT_JA[c] for c in CLASSES),
            ]
        ]
        for p in rows_order:
            c = body["achievement"][key][p]
            evaluated = c["all_met"] + c["partly_met"] + c["none_met"]
            met = c["all_met"] + c["partly_met"]
            table.append([label(p), evaluated, met, ratio(met, evaluated), *(c[k] for k in CLASSES)])
        out[title] = table
    ind = body["indicators"]
    table = [
        [
            "都道府県",
            "就職件数（紹介就職）",
            *(f"うち{GROUP_LABELS_JA[g]}" for g in TARGET_GROUPS),
            f"{GROUP_LABELS_JA['welfare']}の割合",
        ]
    ]
    for p in rows_order:
        i = ind["national"] if p == TOTAL else ind["prefectures"][p]
        table.append([label(p), i["referral_placements"], *(i["by_group"][g]["referral_placements"] for g in TARGET_GROUPS),
                      i["by_group"]["welfare"]["share"]])  # fmt: skip
    out["支援対象者別の就職件数"] = table
    table = [["都道府県", "新規求職者数", "うち自治体からの送り込み", "送り込み割合", "チーム支援対象者数", "就職件数（紹介就職）",
              "就職率", "自己就職件数", "就職確認数", "正社員就職件数"]]  # fmt: skip
    for p in rows_order:
        i = ind["national"] if p == TOTAL else ind["prefectures"][p]
        table.append([label(p), i["new_job_seekers"], i["referred_by_authority"], i["referral_share"], i["team_support"],
                      i["referral_placements"], i["placement_rate"], i["self_found_placements"],
                      i["confirmed_placements"], i["regular_placements"]])  # fmt: skip
    out["連携指標"] = table
    return out
