"""Erasure (消去): delete a person's data key and every row the shared view holds about them.

Deleting the key makes every sealed copy of their personal data unreadable at once — in the topics, the
dead-letter topic, the outbox and the event log (crypto-shredding). The view's own rows (record, held
events, consents) and the feed's consent records of the person are deleted in the same transaction,
and the person key goes on the erasure register so a replay skips them. The access log stays: it names
no one (pseudonymous key, organisation, field names) and is the record of who saw what.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from consumers.shared_view.store import ERASURE_LOCK
from infra.crypto import KeyStore
from infra.logging import get_logger

log = get_logger("shared-view.erasure")


@dataclass(frozen=True, slots=True)
class Erasure:
    person_key: str
    key_deleted: bool
    rows_deleted: int
    already_erased: bool


async def erase_person(
    conn: asyncpg.Connection, keystore: KeyStore, person_key: str, *, requested_by: str
) -> Erasure:
    async with conn.transaction():
        # Waits for the batch in flight; later batches see the register and skip the person.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ERASURE_LOCK)
        already = (
            await conn.fetchval("SELECT true FROM sv_erasures WHERE person_key = $1", person_key) or False
        )
        key_deleted = await keystore.erase(conn, person_key)
        rows = 0
        # The view's rows, and the feed's consent records: kept, they would go on deciding deliveries
        # about a person who no longer exists for the hub (issue 10).
        for table in ("sv_persons", "sv_events", "sv_consents", "feed_consents"):
            status = await conn.execute(f"DELETE FROM {table} WHERE person_key = $1", person_key)
            rows += int(status.rsplit(" ", 1)[1])
        await conn.execute(
            "INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            person_key,
            requested_by,
        )
    keystore.forget(person_key)
    log.info(
        "person erased", person_key=person_key, key_deleted=key_deleted, rows_deleted=rows, by=requested_by
    )
    return Erasure(person_key, key_deleted, rows, bool(already))
