"""Erasure (消去): delete a person's data key and every row the hub's database holds about them, and tell
every consumer and service so (``ittai.erasure.v1``).

Deleting the key makes every sealed copy of their personal data unreadable at once — in the topics, the
dead-letter topic, the outbox and the event log (crypto-shredding). The view's own rows (record, held
events, consents) and the feed's consent records of the person are deleted in the same transaction, so
nothing waits for a consumer's lag, and the person key goes on the erasure register so a replay skips
them. The same transaction puts an ``ittai.erasure.v1`` event in the outbox (no personal data: person
key, erasure id, time; source ``/hub/operator``): it reaches what this transaction cannot — a consumer
that applied an older event of the person after this commit (``consumers.erasure``), and every process
keeping data keys in memory (``infra.erasure_follower``). The access log stays: it names no one
(pseudonymous key, organisation, field names) and is the record of who saw what.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from contracts.envelope import Event, Family, event_type, new_event_id
from contracts.events import Erasure as ErasureData
from contracts.events import ErasureClaim
from domain.provenance import OPERATOR_SOURCE
from infra.crypto import KeyStore, forget_everywhere
from infra.db import AdvisoryLock
from infra.logging import get_logger
from infra.outbox_rows import insert_events
from infra.signing import ErasureSigner

log = get_logger("shared-view.erasure")


@dataclass(frozen=True, slots=True)
class Erasure:
    person_key: str
    key_deleted: bool
    rows_deleted: int
    already_erased: bool
    event_id: str  # the ittai.erasure.v1 event put in the outbox


def erasure_event(person_key: str, at: datetime, signer: ErasureSigner) -> Event[ErasureData]:
    """The erasure as an event: the person key, an id, a time and the operator's signature over them —
    nothing personal."""
    erasure_id = new_event_id()
    signature = signer.sign(
        ErasureClaim(
            event_id=erasure_id,
            subject=person_key,
            source=OPERATOR_SOURCE,
            person_key=person_key,
            erasure_id=erasure_id,
            erased_at=at,
        )
    )
    return Event(
        id=erasure_id,
        source=OPERATOR_SOURCE,
        type=event_type(Family.ERASURE),
        subject=person_key,
        time=at,
        family=Family.ERASURE,
        data=ErasureData(
            person_key=person_key,
            erasure_id=erasure_id,
            erased_at=at,
            key_id=signer.key_id,
            signature=signature,
        ),
    )


async def erase_person(
    conn: asyncpg.Connection,
    keystore: KeyStore,
    person_key: str,
    *,
    requested_by: str,
    namespace: str,
    signer: ErasureSigner,
) -> Erasure:
    async with conn.transaction():
        # Waits for the batch in flight; later batches see the register and skip the person.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.ERASURE)
        # Then every accepting transaction in flight (P9 at commit: the acceptance erasure lock that
        # migration 021's ``accept_events`` and 029's ``accept_file_rows`` take shared).
        await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.ACCEPTANCE_ERASURE)
        already = (
            await conn.fetchval("SELECT true FROM sv_erasures WHERE person_key = $1", person_key) or False
        )
        key_deleted = await keystore.erase(conn, person_key)
        rows = 0
        # The view's rows, and the feed's consent records: kept, they would go on deciding deliveries
        # about a person who no longer exists for the hub (issue 10).
        for table in ("sv_persons", "sv_events", "sv_reveals", "sv_consents", "feed_consents"):
            status = await conn.execute(f"DELETE FROM {table} WHERE person_key = $1", person_key)
            rows += int(status.rsplit(" ", 1)[1])
        await conn.execute(
            "INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            person_key,
            requested_by,
        )
        # Published again on a repeated erasure: harmless (every consumer applies it idempotently), and
        # the way to reach a process that was away.
        event = erasure_event(person_key, datetime.now(UTC), signer)
        await insert_events(conn, [event], origin="erasure", namespace=namespace)
    forget_everywhere([person_key])  # this process's key stores at once; the others follow the event
    log.info(
        "person erased", person_key=person_key, key_deleted=key_deleted, rows_deleted=rows, by=requested_by
    )
    return Erasure(person_key, key_deleted, rows, bool(already), event.id)


async def drop_erased(conn: asyncpg.Connection, persons: Sequence[str]) -> None:
    """``ittai.erasure.v1`` in the shared view (``consumers.erasure``): the people's rows go (already gone
    where ``erase_person`` ran on this database; not where the view lagged or is rebuilt) and they go on
    the register, so the rest of the batch and every later one — a replay too — skips them; every key
    store of this process forgets their keys."""
    for table in ("sv_persons", "sv_events", "sv_reveals", "sv_consents"):
        await conn.execute(f"DELETE FROM {table} WHERE person_key = ANY($1::text[])", list(persons))
    await conn.execute(
        "INSERT INTO sv_erasures (person_key, requested_by) SELECT p, 'erasure event' "
        "FROM unnest($1::text[]) AS p ON CONFLICT DO NOTHING",
        list(persons),
    )
    forget_everywhere(persons)
