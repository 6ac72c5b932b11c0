"""Ingest benchmark: HTTP events/s and latency at a fixed concurrency, and CSV import rows/s.

Runs against the real stack in an isolated database and topic namespace. The employment adapter runs in
a subprocess (``hub run employment-adapter``, uvicorn, one process, then ``--workers 2``), the load
generator here (keep-alive HTTP/1.1 connections, ``_LoadGenerator``), so they compete for this machine's
cores as they would on one host. Figures are printed together with the same run's baseline (``/healthz``,
no database), so ratios hold across machines. Each line also gives CPU time per event (from /proc): the
adapter's processes', PostgreSQL's (the backends of the bench database) and the load generator's. Unlike
events/s, these hardly move when other work shares the machine, so they are the figures to compare between
runs on a busy host. Requests are made before the clock starts: the load generator's CPU is then the
sending and parsing alone. The last lines compare 2 workers with 1 and the figures with the issue's
targets.

    .venv/bin/python bench/bench_ingest.py [--requests 4000] [--concurrency 32] [--rows 50000]
        [--workers 2] [--separate-relay] [--csv-only] [--one-process] [--single-only]
        [--profile FILE] [--name ingest]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httptools
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HUB_EMPLOYMENT_PORT", "18482")
os.environ.setdefault("HUB_LOG_LEVEL", "WARNING")

from bench.common import bench_settings, fresh_pool  # noqa: E402
from infra.auth import OrgKind, Role, add_client  # noqa: E402
from infra.codecs.csv_write import write_csv  # noqa: E402
from producers.adapters.csv_import import import_as_client  # noqa: E402
from producers.adapters.sites import add_sites  # noqa: E402
from tests import factories  # noqa: E402


def _placement() -> dict[str, Any]:
    return factories.placement(uuid.uuid4().hex).data


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the load generator: it writes a request made in advance and
    waits for the answer (httptools parses it). aiohttp spent 200–360 µs of CPU per request here, as
    much as a third of what the adapter spends, on the same two cores; this spends a fraction of that,
    so more of the machine is left to what is measured."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError("the adapter closed the connection"))
        self.transport = None

    async def send(self, request: bytes) -> int:
        """The status of the answer to ``request`` (the whole message: request line, headers, body)."""
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.answer


class _LoadGenerator:
    """``concurrency`` connections to the adapter, each sending its next request once answered."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.connections: list[_Connection] = []

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> bytes:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            f"Authorization: Bearer {self.token}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _connection(self, i: int) -> _Connection:
        while len(self.connections) <= i:
            self.connections.append(_Connection())
        conn = self.connections[i]
        if conn.transport is None or conn.transport.is_closing():
            conn = self.connections[i] = _Connection()
            await asyncio.get_running_loop().create_connection(lambda: conn, "127.0.0.1", self.port)
        return conn

    async def run(self, requests: list[bytes], concurrency: int) -> tuple[float, list[float], int]:
        """Send every request (at most ``concurrency`` in flight); (seconds, latencies, failures)."""
        latencies: list[float] = []
        failures = 0
        queue = iter(requests)

        async def worker(i: int) -> None:
            nonlocal failures
            for request in queue:
                conn = await self._connection(i)
                started = time.perf_counter()
                try:
                    status = await conn.send(request)
                except ConnectionError:
                    status = 0
                latencies.append(time.perf_counter() - started)
                if status not in (200, 202):
                    failures += 1

        for i in range(concurrency):  # connected before the clock starts
            await self._connection(i)
        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return time.perf_counter() - started, latencies, failures

    def close(self) -> None:
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.close()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` and its children, the workers (Linux
    /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_s(int(child)) for child in children)


async def _pg_cpu_s(pool: asyncpg.Pool) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend of this bench's database (Linux /proc, when
    PostgreSQL runs on this host; empty elsewhere)."""
    async with pool.acquire() as conn:
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
        )
    return {r["pid"]: _cpu_s(r["pid"]) for r in pids}


def _pg_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends used between two readings (a backend started meanwhile: all of its own)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _p(latencies: list[float], q: int) -> float:
    return statistics.quantiles(latencies, n=100)[q - 1] * 1000 if len(latencies) > 1 else 0.0


def _report(
    label: str,
    events: int,
    elapsed: float,
    latencies: list[float],
    failures: int,
    cpu_s: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> float:
    """One line; ``cpu_s``: the adapter's, PostgreSQL's and the load generator's CPU seconds."""
    rate = events / elapsed
    adapter, pg, client = (f"{s / events * 1e6:5.0f}" for s in cpu_s)
    print(
        f"{label:38} {rate:7.0f} events/s  p50 {_p(latencies, 50):6.1f} ms  p99 {_p(latencies, 99):6.1f} ms"
        f"  ({len(latencies)} requests, {failures} failed)  CPU us/event: adapter {adapter}, PostgreSQL {pg},"
        f" load generator {client}"
    )
    return rate


_READY_S = 180


async def _http_phase(
    args: argparse.Namespace,
    pool: asyncpg.Pool,
    port: int,
    token: str,
    *,
    separate_relay: bool,
    workers: int = 1,
) -> tuple[float, float, float, float]:
    env = os.environ.copy() | {"HUB_ADAPTER_RUNS_RELAY": "false" if separate_relay else "true"}
    hub = str(ROOT / ".venv/bin/hub")
    adapter = [hub, "run", "employment-adapter", "--workers", str(workers)]
    if args.profile and workers == 1:  # the adapter under cProfile (its figures are then not comparable)
        adapter = [sys.executable, "-m", "cProfile", "-o", args.profile, *adapter]
    procs = [subprocess.Popen(adapter, env=env, stdout=subprocess.DEVNULL)]  # noqa: ASYNC220
    if separate_relay:
        procs.append(subprocess.Popen([hub, "run", "relay"], env=env, stdout=subprocess.DEVNULL))  # noqa: ASYNC220
    load = _LoadGenerator(port, token)
    try:
        # Ready before anything is sent: on a busy machine an adapter's start (imports, migrations, the
        # relay's lock) took more than 10 s, and the warm-up then found no listening socket.
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + _READY_S
            while True:
                if any(proc.poll() is not None for proc in procs):
                    raise RuntimeError("the adapter (or its relay) exited before it was ready")
                try:
                    async with http.get("/readyz") as ready:
                        if ready.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the adapter was not ready within {_READY_S} s")
                await asyncio.sleep(0.1)

        n = args.requests
        # Every request is made before its phase starts (a new person each: no data key is reused).
        post = load.request
        warm_up = [post("POST", "/v1/placement", orjson.dumps(_placement())) for _ in range(200)]
        health_checks = [post("GET", "/healthz") for _ in range(n)]
        singles = [post("POST", "/v1/placement", orjson.dumps(_placement())) for _ in range(n)]
        keyed = [
            post("POST", "/v1/placement", orjson.dumps(_placement()), {"Idempotency-Key": uuid.uuid4().hex})
            for _ in range(n)
        ]
        batches = max(n // args.batch, 20)
        batched_requests = [
            post("POST", "/v1/placement/batch", orjson.dumps([_placement() for _ in range(args.batch)]))
            for _ in range(batches)
        ]
        pid = procs[0].pid

        async def measured(requests: list[bytes], concurrency: int) -> tuple[Any, ...]:
            before, pg_before, client_before = _cpu_s(pid), await _pg_cpu_s(pool), time.process_time()
            result = await load.run(requests, concurrency)
            client = time.process_time() - client_before
            # The in-process relay keeps publishing for a moment after the last answer: count it.
            await asyncio.sleep(0 if separate_relay else 0.5)
            pg = _pg_used(pg_before, await _pg_cpu_s(pool))
            return (*result, (_cpu_s(pid) - before, pg, client))

        await load.run(warm_up, args.concurrency)
        if args.single_only:
            single = _report(
                "POST /v1/placement (1 event/request)", n, *await measured(singles, args.concurrency)
            )
            return 0.0, single, 0.0, 0.0
        health = _report("baseline GET /healthz (no DB)", n, *await measured(health_checks, args.concurrency))
        single = _report(
            "POST /v1/placement (1 event/request)", n, *await measured(singles, args.concurrency)
        )
        keyed_rate = _report("  … with Idempotency-Key", n, *await measured(keyed, args.concurrency))
        elapsed, latencies, failures, cpu_s = await measured(batched_requests, min(args.concurrency, 8))
        batched = _report(
            f"POST /v1/placement/batch ({args.batch}/request)",
            batches * args.batch,
            elapsed,
            latencies,
            failures,
            cpu_s,
        )
        return health, single, keyed_rate, batched
    finally:
        load.close()
        for proc in procs:
            # SIGINT under cProfile: uvicorn re-raises the signal it handled, and only an interrupt (not a
            # SIGTERM) lets cProfile write its file on the way out.
            proc.send_signal(signal.SIGINT if args.profile and workers == 1 else signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


async def _csv_phase(args: argparse.Namespace, settings: Any, pool: asyncpg.Pool, token: str) -> float:
    """Import a file of ``args.rows`` placements from disk (as ``hub import`` does), then again (all
    duplicates); the first import's rows/s."""
    with tempfile.TemporaryFile() as content:
        for start in range(0, args.rows, 10_000):  # written a block of rows at a time: bounded memory
            block = [_placement() for _ in range(min(10_000, args.rows - start))]
            written = write_csv("placement", block, japanese=True, era=True, encoding="utf-8")
            content.write(written if start == 0 else written.split(b"\r\n", 1)[1])
        content.seek(0)
        pg_before = await _pg_cpu_s(pool)
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = await import_as_client(settings, pool, content, "placement", token, wait=False)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        pg = _pg_used(pg_before, await _pg_cpu_s(pool))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert summary.accepted == args.rows, summary.as_dict()
        content.seek(0)
        started = time.perf_counter()
        again = await import_as_client(settings, pool, content, "placement", token, wait=False)
        elapsed_again = time.perf_counter() - started
        assert again.duplicates == args.rows
    print(
        f"{'CSV import (in-process, ' + str(args.rows) + ' rows)':38} {args.rows / elapsed:9.0f} rows/s"
        f"   CPU us/row: importer {cpu / args.rows * 1e6:5.0f}, PostgreSQL {pg / args.rows * 1e6:5.0f}"
        f"   peak RSS of this process {peak:.0f} MiB"
    )
    print(f"{'CSV re-import (all duplicates)':38} {args.rows / elapsed_again:9.0f} rows/s")
    return args.rows / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rows", type=int, default=50000)
    parser.add_argument("--csv-only", action="store_true", help="only the CSV import (no HTTP phases)")
    parser.add_argument("--workers", type=int, default=2, help="adapter workers of the scaling phase")
    parser.add_argument(
        "--separate-relay", action="store_true", help="also measure with the relay in its own process"
    )
    parser.add_argument("--profile", help="write a cProfile of the one-process adapter to this file")
    parser.add_argument(
        "--single-only", action="store_true", help="only the one-process single-event phase (profiling)"
    )
    parser.add_argument("--one-process", action="store_true", help="only the one-process HTTP phases")
    parser.add_argument(
        "--name", default="ingest", help="the bench database's name (ittai_bench_NAME): runs side by side"
    )
    args = parser.parse_args()
    settings = bench_settings(args.name)
    pool = await fresh_pool(settings)
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "bench")])
        _, token = await add_client(
            conn,
            name="bench",
            org_kind=OrgKind.OFFICE,
            org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )
    print(
        f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} (other work on this machine skews figures); "
        f"concurrency {args.concurrency}; load generator: keep-alive connections in this process"
    )
    try:
        if args.csv_only:
            csv_rate = await _csv_phase(args, settings, pool, token)
            print(f"target (issue 14): CSV import >= 20000 rows/s (here {csv_rate:.0f})")
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
            return
        print("-- adapter alone, one process (outbox relay in the adapter process, the default)")
        base_rate, single, keyed, batched = await _http_phase(
            args, pool, settings.employment_port, token, separate_relay=False
        )
        if args.one_process or args.single_only:
            return
        print(f"-- adapter with --workers {args.workers} (one listening socket; the relay in worker 0)")
        base_n, single_n, _, batched_n = await _http_phase(
            args, pool, settings.employment_port, token, separate_relay=False, workers=args.workers
        )
        if args.separate_relay:
            print("-- adapter + separate relay process (HUB_ADAPTER_RUNS_RELAY=false, hub run relay)")
            await _http_phase(args, pool, settings.employment_port, token, separate_relay=True)
        csv_rate = await _csv_phase(args, settings, pool, token)
        print(
            f"ratios: single-event POST = {single / base_rate:.2f} x healthz; batch = {batched / base_rate:.2f} x "
            f"healthz; CSV rows/s = {csv_rate / base_rate:.2f} x healthz; keyed = {keyed / single:.2f} x "
            f"unkeyed; batch = {batched / single:.1f} x single"
        )
        print(
            f"scaling, {args.workers} workers / 1: healthz x{base_n / base_rate:.2f}, single-event POST "
            f"x{single_n / single:.2f} ({single:.0f} -> {single_n:.0f} events/s), batch x{batched_n / batched:.2f}"
        )
        print(
            f"targets (issue 14): single-event POST >= 2000 events/s with p99 < 50 ms (best here "
            f"{max(single, single_n):.0f}); CSV import >= 20000 rows/s (here {csv_rate:.0f})"
        )
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
