"""The consent store every consumer keeps its records in (``consumers.consent_store``): what it writes is
what it reads back, in both tables, and the stored columns are what the driver's own encoders wrote before
scopes were staged as an array literal and recipients read back by their text (issue 14)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from consumers.consent_store import ConsentStore
from domain.consent import ConsentRecord, PersonConsent, Recipient, Scope

_RECORDS = [
    ConsentRecord(
        consent_id="c-all",
        version=3,
        withdrawn=False,
        scopes=frozenset(Scope),
        recipients=frozenset(
            {Recipient("authority", "131016"), Recipient("office", "1301"), Recipient("authority", "011002")}
        ),
        valid_from=date(2026, 4, 1),
        valid_until=date(2027, 3, 31),
        signed_at=datetime(2026, 4, 1, 9, 30, 15, 123456, tzinfo=UTC),
    ),
    ConsentRecord(
        consent_id="c-one",
        version=1,
        withdrawn=False,
        scopes=frozenset({Scope.DISCLOSE_PLACEMENT}),
        recipients=frozenset({Recipient("office", "2204")}),
        valid_from=date(2025, 12, 31),
        valid_until=None,
        signed_at=datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
    ),
    ConsentRecord(  # a withdrawal grants nothing: no scopes, no recipients
        consent_id="c-withdrawn",
        version=2,
        withdrawn=True,
        scopes=frozenset(),
        recipients=frozenset(),
        valid_from=date(2026, 1, 1),
        valid_until=None,
        signed_at=datetime(2026, 2, 1, tzinfo=UTC) + timedelta(microseconds=1),
    ),
]


@pytest.mark.parametrize("table", ["sv_consents", "feed_consents"])
async def test_a_saved_record_loads_as_it_was_saved_and_is_stored_as_the_drivers_encoders_stored_it(
    pool: asyncpg.Pool, table: str
) -> None:
    store = ConsentStore(table)  # type: ignore[arg-type]
    person = f"p-{uuid.uuid4().hex}"
    saved = [PersonConsent(person, f"e-{i}-{uuid.uuid4().hex}", r) for i, r in enumerate(_RECORDS)]
    async with pool.acquire() as conn, conn.transaction():
        await store.save(conn, saved)
        loaded = await store.load(conn, [person, f"p-{uuid.uuid4().hex}"])
        assert list(loaded) == [person]
        assert sorted(loaded[person]) == sorted(_RECORDS)
        # The columns as the driver's encoders wrote them before (scopes: a text[] of the names in order;
        # recipients: jsonb of kind and code, ordered), read back without the pool's codecs.
        rows = {
            r["consent_id"]: r
            for r in await conn.fetch(
                f"SELECT consent_id, scopes, recipients::text AS recipients, event_id FROM {table} "
                "WHERE person_key = $1",
                person,
            )
        }
        for c in saved:
            row = rows[c.record.consent_id]
            assert row["scopes"] == sorted(s.value for s in c.record.scopes)
            ordered = sorted(c.record.recipients, key=lambda r: (r.kind, r.code))
            expected = await conn.fetchval(
                "SELECT $1::text::jsonb::text",
                "[" + ", ".join(f'{{"kind": "{r.kind}", "code": "{r.code}"}}' for r in ordered) + "]",
            )
            assert row["recipients"] == expected
            assert row["event_id"] == c.event_id
        # A lower version does not roll a record back; a higher one replaces it whole.
        older = _RECORDS[0]._replace(version=2, scopes=frozenset({Scope.RETENTION_SUPPORT}))
        newer = _RECORDS[1]._replace(
            version=5, scopes=frozenset({Scope.SHARE_REGISTRATION, Scope.RETENTION_SUPPORT})
        )
        await store.save(conn, [PersonConsent(person, "e-old", older), PersonConsent(person, "e-new", newer)])
        again = {r.consent_id: r for r in (await store.load(conn, [person]))[person]}
        assert again["c-all"] == _RECORDS[0]
        assert again["c-one"] == newer
