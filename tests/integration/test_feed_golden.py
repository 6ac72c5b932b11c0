"""A golden month: a handful of people sent through the hub (outbox → Kafka → feed consumer → build),
every indicator of the feed worked out by hand below from the definitions in docs/feed.md, not by the
feed code. Threshold 1, so nothing is suppressed and every figure can be compared.

The month (May 2018) of authority A (131041, sites -01 and -02) and B (112038, site -01):

| person | registered (May) | groups                                  | referred by A | team support      | placed (May)              |
|--------|------------------|-----------------------------------------|---------------|-------------------|---------------------------|
| P1     | A-01             | welfare + disability (two groups)       | yes           |                   | 紹介 at A-01, 正社員       |
| P2     | A-01             | general, youth (25-29), women           |               |                   | 自己就職 at A-01           |
| P3     | A-02             | welfare, parenting, youth, women        | yes           | at registration   | 紹介 at A-02              |
| P4     | A-02, prior application at another office (not a new job seeker) | youth |  |             | 紹介 at A-02              |
| P5     | A-01             | general, foreign, middle-aged (50-54)   | yes           | later, 2018-05-28 |                           |
| P6     | (April, A-01)    | welfare (needy-person support)          | yes (April)   |                   | 紹介 at B-01 (other site) |
| P7     |                  |                                         |               |                   | 紹介 in April at A-01; 1-month check: employed |
| P8     |                  |                                         |               |                   | 紹介 in February at A-02; 3-month check: left  |
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from consumers.catchup import run_until_caught_up
from consumers.feed.builder import build_month
from consumers.feed.projection import FeedProjection
from domain.calendar import YearMonth
from infra.config import Settings
from producers.publish import publish_submissions
from tests import factories as f

pytestmark = pytest.mark.asyncio(loop_scope="session")

A, B = "131041", "112038"
A1, A2, B1 = "131041-01", "131041-02", "112038-01"
MONTH = YearMonth(2018, 5)
P = {n: f"{0x901D00 + n:032x}" for n in range(1, 9)}
GROUPS = (
    "welfare",
    "disability",
    "parenting",
    "youth",
    "women",
    "middle_aged",
    "foreign",
    "general",
    "other",
)


def _stream() -> list[Any]:
    def reg(n: int, site: str, **over: Any) -> Any:
        return f.registration(P[n], **{"site": site, "authority": site[:6], "office": "1301", "team_support": False,
                                       **over})  # fmt: skip

    def ref(n: int, on: str, **over: Any) -> Any:
        return f.referral(P[n], authority=A, site=A1, referred_on=on, **over)

    def placed(n: int, site: str, on: str, **over: Any) -> Any:
        return f.placement(P[n], placement_id=f"{0xB10C00 + n:032x}", site=site, placed_on=on,
                           office="1101" if site[:6] == B else "1301", **over)  # fmt: skip

    return [
        ref(1, "2018-05-01"),
        reg(
            1,
            A1,
            registered_on="2018-05-02",
            attributes=["public_assistance", "disability"],
            sex="male",
            age_band="40-44",
        ),
        placed(
            1,
            A1,
            "2018-05-20",
            attributes=["public_assistance", "disability"],
            sex="male",
            age_band="40-44",
            employment_type="regular_full_time",
        ),
        reg(2, A1, registered_on="2018-05-07", attributes=["general"], sex="female", age_band="25-29"),
        placed(
            2, A1, "2018-05-25", route="self_found", attributes=["general"], sex="female", age_band="25-29"
        ),
        ref(3, "2018-05-08"),
        reg(
            3,
            A2,
            registered_on="2018-05-08",
            attributes=["child_rearing_allowance"],
            sex="female",
            age_band="30-34",
            team_support=True,
        ),
        placed(3, A2, "2018-05-22", attributes=["child_rearing_allowance"], sex="female", age_band="30-34"),
        reg(
            4,
            A2,
            registered_on="2018-05-09",
            attributes=["youth"],
            sex="male",
            age_band="19以下",
            prior_application_office="1302",
        ),
        placed(4, A2, "2018-05-23", attributes=["youth"], sex="male", age_band="19以下"),
        ref(5, "2018-05-10"),
        reg(
            5,
            A1,
            registered_on="2018-05-10",
            attributes=["general"],
            sex="male",
            age_band="50-54",
            foreign_national=True,
        ),
        ref(5, "2018-05-28", team_support_from="2018-05-28"),
        ref(6, "2018-04-10"),
        reg(
            6,
            A1,
            registered_on="2018-04-11",
            attributes=["needy_person_support"],
            sex="male",
            age_band="35-39",
        ),
        placed(6, B1, "2018-05-15", attributes=["needy_person_support"], sex="male", age_band="35-39"),
        placed(7, A1, "2018-04-16", attributes=["general"], sex="male", age_band="45-49"),
        f.retention(
            P[7], f"{0xB10C07:032x}", checkpoint_months=1, status="employed", checked_on="2018-05-16", site=A1
        ),
        placed(8, A2, "2018-02-14", attributes=["general"], sex="male", age_band="45-49"),
        f.retention(
            P[8],
            f"{0xB10C08:032x}",
            checkpoint_months=3,
            status="left",
            left_on="2018-04-30",
            checked_on="2018-05-14",
            site=A2,
        ),
    ]


def by_hand() -> dict[str, dict[str, Any]]:
    """Every indicator, worked out from the table in the module's docstring."""
    zero = {g: 0 for g in GROUPS}
    new = {  # new job seekers: P1, P2, P3, P5 (P4 applied elsewhere first)
        "A": dict(
            zero, welfare=2, disability=1, parenting=1, youth=2, women=2, middle_aged=1, foreign=1, general=2
        ),
        A1: dict(zero, welfare=1, disability=1, youth=1, women=1, middle_aged=1, foreign=1, general=2),
        A2: dict(zero, welfare=1, parenting=1, youth=1, women=1),
    }
    placed = {  # 紹介就職: P1, P3, P4, P6 (other site); a person in every group they belong to
        "A": dict(zero, welfare=3, disability=1, parenting=1, youth=2, women=1),
        A1: dict(zero, welfare=1, disability=1),
        A2: dict(zero, welfare=1, parenting=1, youth=2, women=1),
    }
    own_placed = {"A": dict(placed["A"], welfare=2)}  # without P6, placed at another authority's site
    totals = {
        "A": dict(new=4, referred=3, team=2, placed=4, own_placed=3, self_found=1, regular=1),
        A1: dict(new=3, referred=2, team=1, placed=1, own_placed=1, self_found=1, regular=1),
        A2: dict(new=1, referred=1, team=1, placed=2, own_placed=2, self_found=0, regular=0),
    }
    out: dict[str, dict[str, Any]] = {}
    for scope, t in totals.items():
        g_own = own_placed.get(scope, placed[scope])
        out[scope] = {
            "new_job_seekers": t["new"],
            "referred_by_authority": t["referred"],
            "referral_share": round(t["referred"] / t["new"], 4),
            "team_support": t["team"],
            "referral_placements": t["placed"],
            "self_found_placements": t["self_found"],
            "confirmed_placements": t["placed"] + t["self_found"],
            "placement_rate": round(t["own_placed"] / t["new"], 4),
            "regular_placements": t["regular"],
            "by_group": {
                g: {
                    "new_job_seekers": new[scope][g],
                    "referral_placements": placed[scope][g],
                    "placement_rate": round(g_own[g] / new[scope][g], 4) if new[scope][g] else None,
                }
                for g in GROUPS
            },
        }
    out["A"] |= {
        "retention_1m_cohort": 1, "retention_1m_employed": 1, "retention_1m_rate": 1.0,
        "retention_3m_cohort": 1, "retention_3m_employed": 0, "retention_3m_rate": 0.0,
        "retention_6m_cohort": 0, "retention_6m_employed": 0, "retention_6m_rate": None,
    }  # fmt: skip
    # Per site: P7's 1-month check at A-01, P8's 3-month check at A-02.
    out[A1] |= {"retention_1m_cohort": 1, "retention_1m_employed": 1, "retention_1m_rate": 1.0,
                "retention_3m_cohort": 0, "retention_3m_employed": 0, "retention_3m_rate": None}  # fmt: skip
    out[A2] |= {"retention_1m_cohort": 0, "retention_1m_employed": 0, "retention_1m_rate": None,
                "retention_3m_cohort": 1, "retention_3m_employed": 0, "retention_3m_rate": 0.0}  # fmt: skip
    for site in (A1, A2):
        out[site] |= {"retention_6m_cohort": 0, "retention_6m_employed": 0, "retention_6m_rate": None}
    return out


@pytest.fixture(scope="module")
async def built(pool: asyncpg.Pool, settings: Settings) -> dict[str, dict[str, Any]]:
    await publish_submissions(settings, pool, _stream(), origin="test-feed-golden")
    await run_until_caught_up(FeedProjection(settings), settings, pool)
    exact = settings.model_copy(update={"feed_suppression_threshold": 1})
    await build_month(pool, exact, MONTH, now=datetime.now(UTC), authorities=[A, B])
    rows = await pool.fetch(
        "SELECT DISTINCT ON (authority) authority, body FROM feed_revisions WHERE month = $1 "
        "ORDER BY authority, revision DESC",
        str(MONTH),
    )
    return {r["authority"]: r["body"] for r in rows}


async def test_every_indicator_of_the_golden_month_equals_the_hand_computation(
    built: dict[str, dict[str, Any]],
) -> None:
    expected = by_hand()
    indicators = built[A]["indicators"]
    assert indicators["authority"] == expected["A"]
    assert indicators["sites"][A1] == expected[A1]
    assert indicators["sites"][A2] == expected[A2]
    # The groups overlap: a person counts in each of theirs, the total counts people once.
    assert sum(v["referral_placements"] for v in expected["A"]["by_group"].values()) == 8
    assert indicators["authority"]["referral_placements"] == 4


async def test_the_site_of_another_authority_counts_its_own_placement(
    built: dict[str, dict[str, Any]],
) -> None:
    b = built[B]["indicators"]["authority"]
    assert b["referral_placements"] == 1 and b["new_job_seekers"] == 0 and b["placement_rate"] is None
    assert b["by_group"]["welfare"]["referral_placements"] == 1
