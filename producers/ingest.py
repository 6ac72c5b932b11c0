"""Accepting submissions: seal personal fields at the edge, validate, and enqueue in one transaction.

This is the port the adapters (HTTP, CSV) and the simulator share: once ``accept`` returns, every event
in it is durably in the outbox and will reach Kafka even if the broker is down right now.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from contracts.envelope import Event
from infra.crypto import KeyStore
from producers.outbox import enqueue
from producers.submission import ExtraPolicy, Submission, to_event


async def seal_and_validate(
    conn: asyncpg.Connection, keystore: KeyStore, subs: Sequence[Submission], *, extra: ExtraPolicy = "forbid"
) -> list[Event]:
    """Raises ``pydantic.ValidationError`` for the first invalid submission."""
    needs_key = [s.person_key for s in subs if isinstance(s.data.get("personal"), dict)]
    keys = await keystore.keys_for(conn, needs_key) if needs_key else {}
    return [to_event(s, keys.get(s.person_key), extra=extra) for s in subs]


async def accept(
    conn: asyncpg.Connection,
    keystore: KeyStore,
    subs: Sequence[Submission],
    *,
    origin: str,
    namespace: str,
    extra: ExtraPolicy = "forbid",
) -> list[Event]:
    """Seal, validate and enqueue ``subs`` atomically (all or none)."""
    events = await seal_and_validate(conn, keystore, subs, extra=extra)
    async with conn.transaction():
        await enqueue(conn, events, origin=origin, namespace=namespace)
    return events
