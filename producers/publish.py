"""Publishing a stream of submissions through the outbox (used by ``hub simulate`` and the demo)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import asyncpg

from infra.config import Settings
from infra.crypto import KeyStore
from producers.ingest import accept
from producers.outbox import OutboxRelay
from producers.submission import Submission


def _chunks(items: Iterable[Submission], size: int) -> Iterator[list[Submission]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


async def publish_submissions(
    settings: Settings,
    pool: asyncpg.Pool,
    subs: Iterable[Submission],
    *,
    origin: str,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Accept every submission into the outbox, then drain the outbox to Kafka. Returns events accepted."""
    keystore = KeyStore.from_settings(settings)
    relay = OutboxRelay(settings, pool)
    total = 0
    try:
        async with pool.acquire() as conn:
            for chunk in _chunks(subs, batch_size):
                await accept(conn, keystore, chunk, origin=origin, namespace=settings.topic_namespace)
                total += len(chunk)
                if progress:
                    progress(len(chunk))
                if total % (batch_size * 20) == 0:
                    await relay.drain()
        await relay.drain()
    finally:
        await relay.close()
    return total
