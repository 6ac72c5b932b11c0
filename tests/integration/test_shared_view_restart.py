"""``hub run shared-view`` killed mid-batch (SIGKILL) and restarted ends with the same view as the rules
give for the whole stream: computed here independently, by the pure projection over the submissions."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict

import asyncpg
from aiokafka import AIOKafkaProducer

from consumers.catchup import end_offsets, progress_of
from consumers.shared_view.handler import today_jst
from consumers.shared_view.store import load_views
from contracts.envelope import Family, encode
from contracts.events import Sealed
from devtools.simulator import SimulationConfig, simulate
from domain.consent import ConsentRecord, consent_record
from domain.shared_view import PersonView, StoredEvent, active_consent, project
from infra.config import Settings
from infra.crypto import KeyStore, open_sealed
from infra.kafka import client_options
from infra.topics import ensure_topics
from producers.submission import to_event
from tests.helpers import wait_for


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "run", "shared-view", "--no-api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_killed_mid_batch_then_restarted_gives_the_same_view(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    own = settings.model_copy(update={"topic_namespace": f"sv{uuid.uuid4().hex[:8]}"})
    await ensure_topics(own)
    subs = list(simulate(SimulationConfig(authorities=2, months=3, seed=11)))
    keystore = KeyStore.from_settings(settings)
    async with pool.acquire() as conn:
        keys = await keystore.keys_for(conn, {s.person_key for s in subs})
    events = [to_event(s, keys[s.person_key]) for s in subs]

    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = []
        for e in events:
            k, headers, value = encode(e)
            futures.append(await producer.send(own.topic(e.family), value, key=k, headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    # The oracle: the rules applied to the whole stream at once.
    consents: dict[str, dict[str, ConsentRecord]] = defaultdict(dict)
    stored: dict[str, list[StoredEvent]] = defaultdict(list)
    for e in events:
        pk = e.subject
        data = e.data.model_dump(mode="json", exclude_none=True)
        if e.family is Family.CONSENT:
            rec = consent_record(data)
            held = consents[pk].get(rec.consent_id)
            if held is None or rec.version > held.version:
                consents[pk][rec.consent_id] = rec
        else:
            sealed = data.get("personal")
            opened = open_sealed(keys[pk], pk, Sealed.model_validate(sealed)) if sealed else None
            stored[pk].append(StoredEvent(e.id, e.family.value, e.time, data, opened))
    today = today_jst()
    persons = set(stored) | set(consents)
    expected: dict[str, PersonView] = {}
    for pk in persons:
        view = project(pk, active_consent(consents[pk].values(), today), stored[pk])
        if view is not None:
            expected[pk] = view
    assert 0 < len(expected) < len(persons), "some people consented, some did not or withdrew"

    ends = await end_offsets(own, own.event_topics)
    total = sum(ends.values())
    assert total == len(events)
    env = {**os.environ, "HUB_TOPIC_NAMESPACE": own.topic_namespace, "HUB_BATCH_MAX_RECORDS": "20"}
    async with pool.acquire() as conn:
        progress = lambda: progress_of(conn, "shared-view", ends)  # noqa: E731
        proc = _start(env)
        try:
            await wait_for(progress, until=lambda n: n >= 300, timeout_s=60)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            proc.kill()
        killed_at = await progress()
        assert 0 < killed_at < total, "the kill must land mid-stream"

        proc = _start(env)
        try:
            await wait_for(progress, until=lambda n: n >= total, timeout_s=90)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 0, stderr.decode()[-2000:]
        views = {v.person_key: v for v in await load_views(conn, persons)}
    assert views.keys() == expected.keys()
    assert views == expected
