"""A rogue producer with write access to the event topics: hundreds of generated records — garbage
bytes, valid events with one field or header replaced by anything, personal blocks sealed under the
person's real key holding anything — then one good event. Every consumer (event log, shared view,
placement feed) must take all of it in one run, without a restart, and apply the good event; and no
dead-letter reason may repeat a value it refused.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.catchup import end_offsets, run_until
from consumers.event_log import EventLogHandler
from consumers.feed.projection import FeedProjection
from consumers.runtime import BatchHandler, ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import ID_PATTERN, SOURCE_PATTERN, encode
from infra.config import Settings
from infra.crypto import KeyStore, seal
from infra.kafka import client_options
from infra.topics import ensure_topics
from producers.ingest import accept
from producers.outbox import OutboxRelay
from producers.submission import to_event
from tests import factories

RECORDS = 300
SCHEMAS = Path(__file__).parents[2] / "contracts" / "schemas"
Record = tuple[str, bytes | None, list[tuple[str, bytes]], bytes | None]

anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.sampled_from([2**31, -(2**31) - 1, 0, -1])
    | st.text(max_size=30)
    | st.sampled_from(
        ["\x00", "a\x00b", "\ud7ff", "9999-12-31", "0001-01-01", "131041", "x" * 300, "１３１０４１"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["version", "form_version", "scopes", "recipients", "captured", "valid_from", "valid_until",
          "authority", "site", "office", "attributes", "registered_on", "placed_on", "checkpoint_months",
          "occupation", "left_on", "status", "personal", "sex", "age_band", "erasure_id", "erased_at", "signature",
          "key_id", "person_key", "extra"]  # fmt: skip
GENERATION = settings(
    max_examples=RECORDS,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
PERSONAL = ["name", "name_kana", "birth_date", "phone", "address", "employer_name", "case_number"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rogue_namespace(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Settings]:
    own = settings.model_copy(update={"topic_namespace": f"r{uuid.uuid4().hex[:10]}"})
    await ensure_topics(own)
    yield own


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _records(settings: Settings, keys: dict[str, bytes], sent: set[str]) -> list[Record]:
    """``RECORDS`` generated records, drawn by hypothesis (derandomized: the same records every run); the
    texts of 6 characters or more they carry are added to ``sent``."""
    bases = []
    for pk, key in keys.items():
        for sub in (*factories.one_of_each(pk), factories.erasure(pk)):  # the sixth kind: erasures too
            bases.append((sub.family, encode(to_event(sub, key)), key))
    out: list[Record] = []

    @GENERATION
    @given(
        base=st.sampled_from(range(len(bases))),
        kind=st.sampled_from(["field", "header", "personal", "bytes"]),
        field=st.sampled_from(FIELDS),
        value=anything,
        header=st.sampled_from(["ce_time", "ce_type", "ce_specversion", "ce_id", "ce_source", "ce_subject"]),
        raw=st.binary(max_size=200),
        personal_field=st.sampled_from(PERSONAL),
    )
    def draw(
        base: int, kind: str, field: str, value: Any, header: str, raw: bytes, personal_field: str
    ) -> None:
        family, (key, headers, body), data_key = bases[base]
        topic = settings.topic(family)
        texts = [*_strings(value), raw.decode("utf-8", "replace")] if kind == "header" else _strings(value)
        sent.update(s for s in texts if len(s.strip()) >= 6)
        data = orjson.loads(body)
        if kind == "field":
            data[field] = value
            out.append((topic, key, headers, _dumps(data)))
        elif kind == "header":
            swapped = [(k, raw if k == header else v) for k, v in headers]
            out.append((topic, key, swapped, body))
        elif kind == "personal" and "personal" in data:
            person = data["person_key"]
            data["personal"] = seal(
                data_key, person, {personal_field: value, "birth_date": "1988-06-01"}
            ).model_dump()
            out.append((topic, key, headers, _dumps(data)))
        else:
            out.append((topic, raw or None, [(k, raw) for k, _ in headers[: len(raw) % 8]], raw or b"\x00"))

    draw()
    return out[:RECORDS]


def _dumps(data: Any) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError:  # an integer past 64 bits: as text, which is just as hostile
        return str(data).encode()


async def test_rogue_topic_records_never_stop_a_consumer(
    pool: asyncpg.Pool, rogue_namespace: Settings
) -> None:
    settings = rogue_namespace
    keystore = KeyStore.from_settings(settings)
    people = [factories.person_key() for _ in range(4)]
    async with pool.acquire() as conn:
        keys = await keystore.keys_for(conn, people)
    sent: set[str] = set()
    records = _records(settings, keys, sent)
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for topic, key, headers, value in records:
            await producer.send(topic, value, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    good = factories.person_key()
    async with pool.acquire() as conn:
        await accept(
            conn, keystore, [factories.registration(good), factories.consent(good)], origin="fuzz",
            namespace=settings.topic_namespace,
        )  # fmt: skip
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
    finally:
        await relay.close()

    handlers: list[BatchHandler] = [
        EventLogHandler(settings),
        SharedViewHandler(settings),
        FeedProjection(settings),
    ]
    restarts = 0  # a runtime that stopped would fail the run below: there is no restart to count
    for handler in handlers:
        runtime = ConsumerRuntime(
            handler, settings, pool, group_id=f"{handler.name}.{settings.topic_namespace}"
        )
        # One run: ``run_until`` re-raises if the runtime stops before it has caught up.
        await run_until(runtime, pool, await end_offsets(settings, handler.topics), timeout_s=180)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM event_log WHERE subject = $1", good) == 2
        assert await conn.fetchval("SELECT count(*) FROM sv_persons WHERE person_key = $1", good) == 1
        assert await conn.fetchval("SELECT count(*) FROM feed_registrations WHERE person_key = $1", good) == 1
        reasons = [
            r["reason"]
            for r in await conn.fetch(
                "SELECT reason FROM dead_letters WHERE source_topic = ANY($1::text[])", settings.event_topics
            )
        ]
    letters = len(reasons)
    # A rule may quote a pattern or a name of the contracts or the envelope (``header ce_type: …``), or a
    # word of the hub's own reasons (``header ce_specversion: missing (…)``): text that is there is not an
    # echo. Hypothesis draws text from the source's constants too ("ce_type", "missing" among them), so
    # the sources that write the reasons count as the rules' text.
    contracts = [*SCHEMAS.glob("*.json"), SCHEMAS.parent / "asyncapi.json"]
    root = SCHEMAS.parent.parent
    sources = [*root.glob("contracts/*.py"), *root.glob("consumers/**/*.py"), *root.glob("domain/*.py")]
    rules = "".join(f.read_text() for f in [*contracts, *sources]) + ID_PATTERN + SOURCE_PATTERN
    echoes = sorted({s for s in sent for reason in reasons if s in reason and s not in rules})
    assert not echoes, f"dead-letter reasons repeat values they refused: {echoes[:5]!r}"
    print(
        f"fuzz topics: {len(records)} rogue records, 3 consumers, restarts {restarts}, "
        f"dead letters {letters} (over the three consumers)"
    )
    assert letters > 0
