"""Acceptance: the one path every producer takes — validate → authorise → seal → enqueue.

HTTP and CSV (``producers.adapters``) and the simulator (``producers.publish``) accept events through the
same steps:

1. **validate** (``submission.validate`` / ``check``): once, against the family's contract with the
   personal block in clear; a refusal names the field and the rule.
2. **authorise**: the caller's rule — the adapters' ``authorization.authorize`` (a credential proves one
   organisation and its sites), or a trusted source (the simulator, tests).
3. **seal** (``seal_events``): each personal block with its person's data key, all keys in one round
   trip, only for events that are valid and authorised — a refused request leaves no key behind.
4. **enqueue** (``outbox.enqueue``): into the outbox in the caller's transaction. Once it commits, the
   event reaches Kafka even if the broker is down right now.

``accept`` runs the four steps for trusted callers. The adapters run them with their idempotency keys in
the same transaction, and batch concurrent requests into one transaction with a group committer (an
optional batcher: it changes how many requests share a commit, never the steps).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from contracts.envelope import Event
from infra.crypto import KeyStore
from producers.outbox import enqueue
from producers.submission import Checked, ExtraPolicy, Submission, build_event, seal_checked, validate

__all__ = ["accept", "enqueue", "seal_events"]


async def seal_events(
    conn: asyncpg.Connection, keystore: KeyStore, checked: Sequence[Checked], sources: Sequence[str]
) -> list[Event]:
    """Step 3: seal each personal block with its person's data key and build the events (outside any
    transaction: ``KeyStore.keys_for`` commits the keys it makes)."""
    # Sorted: concurrent callers then take the key rows' locks in one order and cannot deadlock.
    people = sorted({c.subject for c in checked if c.personal is not None})
    keys = await keystore.keys_for(conn, people) if people else {}
    return [
        build_event(c, source, seal_checked(c, keys.get(c.subject)))
        for c, source in zip(checked, sources, strict=True)
    ]


async def accept(
    conn: asyncpg.Connection,
    keystore: KeyStore,
    subs: Sequence[Submission],
    *,
    origin: str,
    namespace: str,
    extra: ExtraPolicy = "forbid",
) -> list[Event]:
    """Validate, seal and enqueue ``subs`` atomically (all or none), each under its own trusted source.
    Raises ``pydantic.ValidationError`` for the first invalid submission, before any key is made."""
    checked = [
        validate(s.family, s.data, extra=extra, time=s.time, event_id=s.event_id, trusted=True) for s in subs
    ]
    events = await seal_events(conn, keystore, checked, [s.source for s in subs])
    async with conn.transaction():
        await enqueue(conn, events, origin=origin, namespace=namespace)
    return events
