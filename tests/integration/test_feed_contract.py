"""The feed topic as a contract, and the ministry's roll-up over HTTP, on the real stack.

Every record of ``ittai.feed.v1`` decodes with the official CloudEvents SDK's Kafka binding (binary
mode) and its data validates against the committed JSON Schema; the roll-up is served to ministry
clients only, as JSON, CSV in CP932 and an Excel workbook with one sheet per table."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import jsonschema
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from consumers.catchup import run_until_caught_up
from consumers.feed import builder
from consumers.feed.api import create_feed_app
from consumers.feed.builder import build_month
from consumers.feed.projection import FeedProjection
from consumers.feed.rollup import build_rollup
from contracts.feed import FEED_EVENT_TYPE, FeedRevision, encode_feed_revision
from contracts.generate import FEED_SCHEMA_PATH
from devtools.simulator import SimulationConfig, simulate
from domain.calendar import YearMonth
from infra.auth import OrgKind, Role, add_client
from infra.config import Settings
from producers.publish import publish_submissions
from tests.helpers import read_topic

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Months (and a fiscal year) no other test simulates.
CONFIG = SimulationConfig(
    authorities=2, months=2, seed=2016, start_month="2016-05", registrations_per_site_month=30
)
MONTHS = [YearMonth(2016, 5), YearMonth(2016, 6)]


@pytest.fixture(scope="module")
async def fed(pool: asyncpg.Pool, settings: Settings) -> list[str]:
    subs = list(simulate(CONFIG))
    await publish_submissions(settings, pool, subs, origin="test-feed-contract")
    await run_until_caught_up(FeedProjection(settings), settings, pool)
    sites = sorted({s.data["site"] for s in subs if s.family.value == "registration"})
    # One site with targets, one left out of the evaluation (new that year).
    await pool.executemany(
        "INSERT INTO feed_target_values (scope, fiscal_year, kind, value) VALUES ($1, 2016, $2, $3)",
        [
            (sites[0], "referral_placements", 10),
            (sites[0], "referral_share", 0.3),
            (sites[0][:6], "team_support", 1),
        ],
    )
    await pool.execute(
        "INSERT INTO feed_evaluation_exclusions (scope, fiscal_year, reason) VALUES ($1, 2016, 'new')",
        sites[-1],
    )
    await pool.execute(
        "INSERT INTO feed_target_values (scope, fiscal_year, kind, value) VALUES ($1, 2016, 'referral_placements', 5)",
        sites[-1],
    )
    for m in MONTHS:
        await build_month(pool, settings, m, now=datetime.now(UTC))
    return sites


async def test_every_feed_record_is_a_cloudevent_with_a_valid_revision(
    fed: list[str], settings: Settings
) -> None:
    schema = json.loads(FEED_SCHEMA_PATH.read_text(encoding="utf-8"))
    records = await read_topic(settings, settings.feed_topic)
    ours = [r for r in records if r.key.decode().split(":")[1] in {str(m) for m in MONTHS}]
    assert len(ours) >= 4
    for r in ours:
        event = from_binary(KafkaMessage(headers=dict(r.headers), key=r.key, value=r.value), JSONFormat())
        assert event.get_type() == FEED_EVENT_TYPE and event.get_source() == "/hub/feed"
        assert event.get_subject() == r.key.decode()
        data = json.loads(r.value)
        jsonschema.validate(data, schema)
        revision = FeedRevision.model_validate(data)
        assert f"{revision.authority}:{revision.month}" == r.key.decode()


async def test_ministry_reads_the_rollup_and_nobody_else_does(
    fed: list[str], pool: asyncpg.Pool, settings: Settings
) -> None:
    revision, body = await build_rollup(pool, settings, 2016, YearMonth(2016, 6))
    assert revision == 1
    again, _ = await build_rollup(pool, settings, 2016, YearMonth(2016, 6))
    assert again == 1  # nothing changed, no new revision
    sites = body["achievement"]["sites"]["計"]
    assert sites["excluded"] == 1 and sites["on_pace"] + sites["behind"] == 1, (
        sites
    )  # mid-year: pace, no class
    national: dict[str, Any] = body["indicators"]["national"]
    assert national["referral_placements"] is None or national["referral_placements"] > 0
    async with pool.acquire() as conn:
        _, ministry = await add_client(
            conn, name="mhlw", org_kind=OrgKind.MINISTRY, org_code="*", roles=frozenset({Role.READ})
        )
        _, authority = await add_client(
            conn, name="a", org_kind=OrgKind.AUTHORITY, org_code=fed[0][:6], roles=frozenset({Role.READ})
        )
    with TestClient(create_feed_app(settings)) as client:
        denied = client.get("/rollups/2016", headers={"Authorization": f"Bearer {authority}"})
        ok = client.get("/rollups/2016", headers={"Authorization": f"Bearer {ministry}"})
        csv_resp = client.get(
            "/rollups/2016",
            params={"format": "csv", "table": "sites", "encoding": "cp932"},
            headers={"Authorization": f"Bearer {ministry}"},
        )
        xlsx = client.get(
            "/rollups/2016", params={"format": "xlsx"}, headers={"Authorization": f"Bearer {ministry}"}
        )
        missing = client.get("/rollups/2017", headers={"Authorization": f"Bearer {ministry}"})
    assert denied.status_code == 403 and "ministry" in denied.json()["error"]
    assert ok.status_code == 200 and ok.json()["fiscal_year"] == 2016
    text = csv_resp.content.decode("cp932")
    assert csv_resp.status_code == 200 and "\r\n" in text and text.startswith("都道府県") and "全国" in text
    book = load_workbook(io.BytesIO(xlsx.content))
    assert book.sheetnames[:4] == [
        "自治体の目標達成状況",
        "拠点の目標達成状況",
        "支援対象者別の就職件数",
        "連携指標",
    ]
    assert book["拠点の目標達成状況"]["A2"].value == "全国"
    assert missing.status_code == 404


async def test_each_record_is_its_kept_body_read_as_text_and_each_previous_body_its_text(
    fed: list[str], settings: Settings, pool: asyncpg.Pool
) -> None:
    """The builder reads kept bodies as PostgreSQL's UTF-8 bytes (``convert_to``), not as ``str``, to
    publish them and to compose the next revision: the same text, so the same records (a body holds
    non-ASCII categories: 計)."""
    kept = await pool.fetch(
        "SELECT authority, month, revision, body::text AS body, built_at FROM feed_revisions WHERE month = ANY($1)",
        [str(m) for m in MONTHS],
    )
    assert kept and all("計" in r["body"] for r in kept)
    records = {(r.key, r.value) for r in await read_topic(settings, settings.feed_topic)}
    for r in kept:
        key, _, value = encode_feed_revision(r["body"], r["built_at"])
        assert (key, value) in records
    async with pool.acquire() as conn:
        for m in MONTHS:
            latest = {r["authority"]: r["revision"] for r in kept if r["month"] == str(m)}
            previous = await builder._previous(conn, str(m), latest, sorted(latest))
            assert previous.keys() == latest.keys()
            for a, row in previous.items():
                [text] = [
                    r["body"]
                    for r in kept
                    if (r["authority"], r["month"], r["revision"]) == (a, str(m), row["revision"])
                ]
                assert row["body"] == text.encode()
