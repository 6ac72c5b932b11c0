"""Publishing a stream of submissions through the outbox (used by ``hub simulate`` and the demo).

This is the trusted path (``ingest.accept``): every submission is published under the source it names,
without step 2 (authorisation) — a simulated stream speaks for every organisation at once. So it runs on
a local development stack only (``Settings.is_local_development``); anywhere else it refuses before it
touches anything. A client system's events and files go through their adapter and its credential
(HTTP, or ``hub import FILE --family F --token …``), which authorises each one. Erasure is final on this
path too: ``accept`` refuses a person on the erasure register at commit (P9).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import asyncpg

from infra.config import Settings
from infra.crypto import KeyStore
from producers.ingest import accept
from producers.outbox import OutboxRelay
from producers.submission import Submission


class TrustedPathRefused(Exception):
    """The trusted path was asked to publish outside a local development stack."""

    def __init__(self) -> None:
        super().__init__(
            "publishing a simulated stream skips authorisation (every event under the source it names), so "
            "it runs on a local development stack only (HUB_ENVIRONMENT=local, or a stack `hub stack up` "
            "made). A client system's file goes through its adapter, as that client: "
            "hub import FILE --family F --token ith_…"
        )


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
    """Accept every submission into the outbox, then drain the outbox to Kafka. Returns events accepted.
    Raises ``TrustedPathRefused`` outside a local development stack, before anything is done."""
    if not settings.is_local_development():
        raise TrustedPathRefused()
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
