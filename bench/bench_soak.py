"""Soak: a steady stream (default 1,000 ev/s for 10 minutes) through the outbox → ``hub run relay`` → Kafka
→ ``hub run event-log``; end-to-end latency percentiles (accepted in the outbox → recorded by the
consumer) and the services' memory (RSS) over time. RSS must not grow: the last window is compared with
the first one after warm-up.

    python bench/bench_soak.py [--minutes 10] [--rate 1000]

Runs on the local stack (``HUB_STACK_DIR``) in a database and topic namespace of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_settings, fresh_pool
from devtools.simulator import SimulationConfig, simulate
from infra.crypto import KeyStore
from producers.ingest import accept
from producers.submission import Submission

WINDOW_S = 10.0


def stream() -> Iterator[Submission]:
    for seed in itertools.count(1):
        yield from simulate(SimulationConfig(authorities=4, months=3, seed=seed))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_services() -> dict[str, subprocess.Popen[bytes]]:
    env = {**os.environ, "HUB_LOG_LEVEL": "WARNING"}
    return {
        name: subprocess.Popen([sys.executable, "-m", "hub.cli", "run", name], env=env)
        for name in ("relay", "event-log")
    }


async def latency(conn: asyncpg.Connection, since: float) -> tuple[float, float, float, int]:
    row = await conn.fetchrow(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP "
        "(ORDER BY extract(epoch FROM e.recorded_at - o.accepted_at)) AS p, count(*) AS n "
        "FROM event_log e JOIN outbox o USING (event_id) WHERE e.recorded_at >= to_timestamp($1)",
        since,
    )
    p = row["p"] or [0.0, 0.0, 0.0]
    return p[0] * 1000, p[1] * 1000, p[2] * 1000, row["n"]


async def main(minutes: float, rate: int) -> None:
    settings = bench_settings("soak")
    pool = await fresh_pool(settings)
    keystore = KeyStore.from_settings(settings)
    services = start_services()
    subs = stream()
    tick = 0.1
    per_tick = max(1, round(rate * tick))
    started = time.time()
    end = started + minutes * 60
    next_tick = time.monotonic()
    accepted = 0
    window_start, window_accepted = time.time(), 0
    rows: list[tuple[float, float, float, float, float, float, float]] = []
    print(
        f"{'t s':>6} {'ev/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'relay MiB':>10} {'consumer MiB':>13}"
    )
    try:
        async with pool.acquire() as conn:
            while time.time() < end:
                chunk = list(itertools.islice(subs, per_tick))
                await accept(conn, keystore, chunk, origin="soak", namespace=settings.topic_namespace)
                accepted += len(chunk)
                window_accepted += len(chunk)
                next_tick += tick
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
                now = time.time()
                if now - window_start >= WINDOW_S:
                    p50, p95, p99, _ = await latency(conn, window_start)
                    relay, consumer = rss_mib(services["relay"].pid), rss_mib(services["event-log"].pid)
                    achieved = window_accepted / (now - window_start)
                    rows.append((now - started, achieved, p50, p95, p99, relay, consumer))
                    print(
                        f"{now - started:6.0f} {achieved:7.0f} {p50:8.1f} {p95:8.1f} {p99:8.1f} {relay:10.1f} {consumer:13.1f}"
                    )
                    window_start, window_accepted = now, 0
            await asyncio.sleep(5)  # let the tail arrive
            p50, p95, p99, n = await latency(conn, started)
    finally:
        for proc in services.values():
            proc.terminate()
        for proc in services.values():
            proc.wait(timeout=60)
        await pool.close()
    print(
        f"\naccepted {accepted} events in {minutes:g} min ({accepted / (minutes * 60):.0f} ev/s), {n} recorded"
    )
    print(f"end-to-end latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms")
    if len(rows) >= 4:
        first, last = rows[1], rows[-1]  # rows[0] is warm-up
        for i, name in ((5, "relay"), (6, "event-log")):
            print(
                f"RSS {name}: {first[i]:.1f} MiB after warm-up → {last[i]:.1f} MiB at the end ({last[i] - first[i]:+.1f})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000, help="events accepted per second")
    args = parser.parse_args()
    asyncio.run(main(args.minutes, args.rate))
