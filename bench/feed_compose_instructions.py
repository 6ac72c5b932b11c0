"""The feed's composing and encoding in this process alone, for instruction counts (valgrind) or CPU time:
what ``consumers.feed.builder`` does in Python for each chunk of a national month's feeds (``_kept``:
compose, suppress, write as kept) and for each body it publishes (``_encoded``: checked and written as
the record), on inputs recorded from a real build of bench_feed's month, without PostgreSQL or Kafka.

Wall-clock builds swing with the machine's load (bench_feed's national build: 9-47 s for the same
~7 s of CPU); the same inputs replayed here give repeatable counts. First record the inputs once (a
national build on bench_feed's database, which must hold its generated rows; the revisions it keeps are
deleted first, as bench_feed's run does)::

    HUB_PG_DATABASE=ittai_bench_feed .venv/bin/python -m bench.feed_compose_instructions --record /tmp/feed.pickle

then replay them, everything or the first chunks only (``--chunks``: under valgrind the whole month takes
minutes), and compare the digest printed with the code before a change (the same inputs must give the
same bytes)::

    .venv/bin/python -m bench.feed_compose_instructions /tmp/feed.pickle
    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m bench.feed_compose_instructions /tmp/feed.pickle --chunks 2

Chunks are replayed in the build's order, revision 1's then revision 2's (each revision-2 feed reading
its revision 1 as the build read it back, the kept text), then the encoding of the bodies kept.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import pickle
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from consumers.feed import builder
from infra.gc import paused


async def record() -> tuple[list[tuple[Any, ...]], list[tuple[str, datetime]]]:
    from bench.feed_month import MONTH
    from infra.config import get_settings
    from infra.db import create_pool

    settings = get_settings()
    chunks: list[tuple[Any, ...]] = []
    bodies: list[tuple[str, datetime]] = []
    compose_all, encoded = builder._compose_all, builder._encoded

    async def recording_compose_all(work: Any, threshold: int, horizon: str, executor: Any) -> Any:
        chunks.append((work, threshold, horizon))
        return await compose_all(work, threshold, horizon, executor)

    def recording_encoded(rows: Any) -> Any:
        bodies.extend(rows)
        return encoded(rows)

    builder._compose_all = recording_compose_all  # type: ignore[assignment]
    builder._encoded = recording_encoded  # type: ignore[assignment]
    pool = await create_pool(settings, max_size=4)
    try:
        await pool.execute("DELETE FROM feed_revisions")
        await pool.execute("DELETE FROM feed_dirty")
        await pool.execute(
            "INSERT INTO feed_dirty (authority, month) SELECT site_authority, '2025-10' FROM feed_placements "
            "WHERE arrived_at > '2025-11-05 15:00+00'"
        )
        await builder.build_month(pool, settings, MONTH, now=datetime.now(UTC))
    finally:
        await pool.close()
    return chunks, bodies


def replay(path: str, chunks: int | None) -> None:
    with open(path, "rb") as f:
        recorded, bodies = pickle.load(f)
    if chunks is not None:
        # the first chunks of each revision (revision 1's, then revision 2's)
        firsts = [c for c in recorded if c[0][0].previous is None][:chunks]
        recorded = firsts + [c for c in recorded if c[0][0].previous is not None][:chunks]
        feeds = {(w.job.feed.authority, w.revision) for work, _, _ in recorded for w in work}
        bodies = [b for b in bodies if _key(b[0]) in feeds]
    digest = hashlib.md5()
    with paused():  # as the build composes (``build_month``)
        _replay(recorded, bodies, digest)


def _replay(recorded: list[Any], bodies: list[Any], digest: Any) -> None:
    started = time.process_time()
    for work, threshold, horizon in recorded:
        for k in builder._kept(work, threshold=threshold, horizon=horizon):
            # the changes as they are returned (``Built``): their objects' keys in any order
            changes = orjson.dumps(k.changes, option=orjson.OPT_SORT_KEYS)
            for part in (k.body, k.suppressed, k.changes_text, repr(k.tallies).encode(),
                         repr(k.referral_placements).encode(), changes):  # fmt: skip
                digest.update(len(part).to_bytes(8, "big") + part)
    composed = time.process_time()
    for key, headers, value in builder._encoded(bodies):
        for part in (key, repr(headers).encode(), value):
            digest.update(len(part).to_bytes(8, "big") + part)
    done = time.process_time()
    print(
        f"{sum(len(c[0]) for c in recorded)} feeds composed in {composed - started:.2f} s of CPU, "
        f"{len(bodies)} bodies encoded in {done - composed:.2f} s; digest {digest.hexdigest()}"
    )


def _key(body: str | bytes) -> tuple[str, int]:
    """A kept body's authority and revision, read without decoding it (a ``str`` body's UTF-8 would be
    made and kept with it, and its encoding then not counted where the builder reads it)."""
    text = body if isinstance(body, str) else body.decode()
    a = text.index('"authority":"') + 13
    r = text.index('"revision":') + 11
    return text[a : a + 6], int(text[r : text.index(",", r)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--record", action="store_true", help="record the inputs from a national build")
    parser.add_argument(
        "--chunks", type=int, default=None, help="replay only the first chunks of each revision"
    )
    args = parser.parse_args()
    if args.record:
        chunks, bodies = asyncio.run(record())
        with open(args.path, "wb") as f:
            pickle.dump((chunks, bodies), f, protocol=pickle.HIGHEST_PROTOCOL)
        print(f"recorded {len(chunks)} chunks, {sum(len(c[0]) for c in chunks)} feeds, {len(bodies)} bodies")
    else:
        replay(args.path, args.chunks)


if __name__ == "__main__":
    sys.exit(main())
