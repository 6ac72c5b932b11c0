"""``hub topics ensure`` is idempotent and reports a mismatch instead of ignoring it."""

from __future__ import annotations

import uuid

import asyncpg

from infra.config import Settings
from infra.topics import ensure_topics, wanted_topics


async def test_ensure_creates_then_checks_then_reports_mismatch(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    own = settings.model_copy(update={"topic_namespace": f"e{uuid.uuid4().hex[:8]}"})
    first = await ensure_topics(own)
    assert {r.topic for r in first} == set(wanted_topics(own))
    assert {r.status for r in first} == {"created"}

    second = await ensure_topics(own)
    assert {r.status for r in second} == {"ok"}, second

    wrong = own.model_copy(update={"topic_partitions": own.topic_partitions + 2, "min_insync_replicas": 2})
    third = await ensure_topics(wrong)
    assert {r.status for r in third} == {"mismatch"}
    detail = third[0].detail
    assert f"partitions {own.topic_partitions}, configured {own.topic_partitions + 2}" in detail
    assert "min.insync.replicas 1, configured 2" in detail
