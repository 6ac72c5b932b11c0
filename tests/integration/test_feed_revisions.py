"""Revisions of the monthly feed on the real stack, for a stream whose every event was sent after its
month's cutoff (an authority joining the hub and loading its history): building one authority gives
byte for byte what building every authority gives it, and an attacker holding every revision of the
month and solving over all its tables at once recovers no hidden cell."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from consumers.catchup import run_until_caught_up
from consumers.feed import service
from consumers.feed.builder import build_month
from consumers.feed.projection import FeedProjection
from contracts.envelope import Family
from devtools.simulator import SimulationConfig, simulate
from domain.calendar import YearMonth
from domain.feed import MONOTONE_POPULATIONS
from infra.config import Settings
from producers.publish import publish_submissions
from producers.submission import Submission
from tests.support.feed_attack import attack

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Months no other test simulates.
CONFIG = SimulationConfig(
    authorities=2, months=2, seed=1212, start_month="2019-06", registrations_per_site_month=25
)
MONTH = YearMonth(2019, 6)
SENT = datetime(2019, 9, 1, 1, tzinfo=UTC)  # after both months' cutoffs (2019-07-05, 2019-08-05 JST)
NOW = datetime(2019, 9, 2, tzinfo=UTC)
MONOTONE = MONOTONE_POPULATIONS  # later revisions only add placements


def _sent_late(subs: list[Submission]) -> list[Submission]:
    """The same events, all sent (CloudEvents time) after the cutoffs, in their original order."""
    return [dataclasses.replace(s, time=SENT + timedelta(seconds=i)) for i, s in enumerate(subs)]


async def _revisions(pool: asyncpg.Pool, authority: str | None = None) -> dict[str, list[bytes]]:
    rows = await pool.fetch(
        "SELECT authority, revision, body, suppressed, placement_ids FROM feed_revisions WHERE month = $1 "
        "AND ($2::text IS NULL OR authority = $2) ORDER BY authority, revision",
        str(MONTH),
        authority,
    )
    out: dict[str, list[bytes]] = {}
    for r in rows:
        out.setdefault(r["authority"], []).append(
            orjson.dumps(
                [r["revision"], r["body"], r["suppressed"], r["placement_ids"]], option=orjson.OPT_SORT_KEYS
            )
        )
    return out


@pytest.fixture(scope="module")
async def stream(pool: asyncpg.Pool, settings: Settings) -> list[Submission]:
    subs = _sent_late(list(simulate(CONFIG)))
    await publish_submissions(settings, pool, subs, origin="test-feed-revisions")
    await run_until_caught_up(FeedProjection(settings), settings, pool)
    return subs


async def test_one_authority_builds_exactly_what_the_national_build_gives_it(
    stream: list[Submission], pool: asyncpg.Pool, settings: Settings
) -> None:
    authorities = sorted({s.data["authority"] for s in stream if s.family is Family.REGISTRATION})
    assert len(authorities) == 2
    marks = await pool.fetch("SELECT authority, month FROM feed_dirty WHERE month = $1", str(MONTH))
    assert marks, "the consumer marks the month's feeds"
    single: dict[str, list[bytes]] = {}
    for a in authorities:
        await build_month(pool, settings, MONTH, now=NOW, authorities=[a])
        single |= await _revisions(pool, a)
    await pool.execute("DELETE FROM feed_revisions WHERE month = $1", str(MONTH))
    await pool.execute("DELETE FROM feed_dirty WHERE month = $1", str(MONTH))
    await pool.executemany(
        "INSERT INTO feed_dirty (authority, month) VALUES ($1, $2)",
        [(m["authority"], m["month"]) for m in marks],
    )
    await build_month(pool, settings, MONTH, now=NOW)
    national = await _revisions(pool)
    assert sorted(national) == authorities
    for a in authorities:
        assert len(single[a]) == len(national[a]) == 1, a  # revision 1 from everything sent so far
        assert single[a] == national[a], a


async def test_attacker_with_every_revision_and_every_table_recovers_nothing(
    stream: list[Submission], pool: asyncpg.Pool, settings: Settings
) -> None:
    # The single-authority path of the previous test left the month built; late events make revision 2,
    # including a placement at another authority's site of someone an authority referred (a site
    # category the first revision did not have).
    await pool.execute("DELETE FROM feed_revisions WHERE month = $1", str(MONTH))
    authorities = sorted({s.data["authority"] for s in stream if s.family is Family.REGISTRATION})
    for a in authorities:
        await build_month(pool, settings, MONTH, now=NOW, authorities=[a])
    referrals = [s for s in stream if s.family is Family.REFERRAL and s.data["authority"] == authorities[0]]
    other_site = next(
        s.data["site"]
        for s in stream
        if s.family is Family.REGISTRATION and s.data["authority"] == authorities[1]
    )
    template = next(s for s in stream if s.family is Family.PLACEMENT)
    office = next(
        s.data["office"] for s in stream if s.family is Family.REGISTRATION and s.data["site"] == other_site
    )
    late = [
        dataclasses.replace(
            template,
            event_id=f"{0xBEEF0000 + i:032x}",
            source=f"/hellowork/offices/{office}",  # the site's office publishes (the consumers check it)
            time=NOW + timedelta(days=1, seconds=i),
            data=dict(
                template.data,
                placement_id=f"{0xFEED00 + i:032x}",
                person_key=r.data["person_key"],
                site=other_site,
                office=office,
                placed_on=f"{MONTH}-2{i}",
            ),
        )
        for i, r in enumerate(referrals[:4])
    ]
    await publish_submissions(settings, pool, late, origin="test-feed-revisions-late")
    await run_until_caught_up(FeedProjection(settings), settings, pool)
    built = await build_month(pool, settings, MONTH, now=NOW + timedelta(days=2))
    assert any(b.revision == 2 for b in built)
    rows = await pool.fetch(
        "SELECT authority, body FROM feed_revisions WHERE month = $1 ORDER BY authority, revision", str(MONTH)
    )
    bodies: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        bodies.setdefault(r["authority"], []).append(r["body"])
    attacked = 0
    for a, revisions in bodies.items():
        attacked += sum(
            c[1] is None
            for b in revisions
            for ts in b["populations"].values()
            for t in ts
            for c in t["cells"]
        )
        assert attack(revisions, monotone=MONOTONE) == [], a
    assert attacked > 50 and max(len(b) for b in bodies.values()) >= 2


async def test_a_revision_is_kept_as_the_text_written_with_every_object_in_jsonb_order(
    stream: list[Submission], pool: asyncpg.Pool
) -> None:
    # The revisions the tests above built (1 and 2). Kept as written (no parse into jsonb and no printing
    # back: the publisher sends the text it reads), and with every object's keys in the order jsonb gave
    # them, so that the published records, the portal and the downloads read what they read before.
    rows = await pool.fetch(
        "SELECT revision, body::text AS body, body::jsonb::text AS body_jsonb, suppressed::text AS suppressed, "
        "suppressed::jsonb::text AS suppressed_jsonb, changes::text AS changes, "
        "changes::jsonb::text AS changes_jsonb FROM feed_revisions WHERE month = $1",
        str(MONTH),
    )
    assert rows and max(r["revision"] for r in rows) >= 2
    for r in rows:
        for column in ("body", "suppressed", "changes"):
            written = r[column]
            assert written == orjson.dumps(orjson.loads(written)).decode(), column
            assert _key_order(orjson.loads(written)) == _key_order(orjson.loads(r[column + "_jsonb"])), column
    assert any(orjson.loads(r["changes"]) for r in rows)


def _key_order(value: Any) -> list[Any]:
    """Every object's keys, in order, depth first."""
    if isinstance(value, dict):
        return [list(value), *(_key_order(v) for v in value.values())]
    if isinstance(value, list):
        return [_key_order(v) for v in value]
    return []


async def test_a_build_round_reads_only_the_months_something_was_sent_for(
    stream: list[Submission], pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This module's months only: other modules' months in the session database are theirs to build.
    months = [MONTH, YearMonth(2019, 7)]
    read: list[YearMonth] = []

    async def recording(pool: asyncpg.Pool, settings: Settings, month: YearMonth, **kw: Any) -> Any:
        read.append(month)
        return await build_month(pool, settings, month, **kw)

    async def activity(conn: asyncpg.Connection) -> list[YearMonth]:
        return months

    monkeypatch.setattr(service, "build_month", recording)
    monkeypatch.setattr(service, "months_with_activity", activity)
    builder = service.FeedBuilderService(settings, pool)
    later = NOW + timedelta(days=3)
    await builder.build_due(now=later)  # whatever is still due after the tests above
    read.clear()
    assert await builder.build_due(now=later) == 0
    assert read == [], "a round with nothing sent since reads no month"
    # One fact sent since: the consumer marks its month, and that month alone is read again.
    await pool.execute("INSERT INTO feed_dirty (authority, month) VALUES ($1, $2)", "999990", str(MONTH))
    await builder.build_due(now=later)
    assert read == [MONTH]
    assert not await pool.fetchval("SELECT count(*) FROM feed_dirty WHERE month = ANY($1::text[])",
                                   [str(m) for m in months])  # fmt: skip
