"""A hub service served over HTTP for tests (the fuzzers, the console's and portal's tests), from a process
of its own.

A process, not a thread: a service's Kafka clients (the erasure follower's consumer: aiokafka shuffles
partitions and picks brokers with the global ``random``) would otherwise move the global random state
while hypothesis draws a case in the test's process, and hypothesis blames the strategy
(``HypothesisDeprecationWarning: Do not use the `random` module inside strategies``: about a hundred a
run from the fuzzed services, and more in every later hypothesis test while the session's portal served).
Forked with the app already built, as each service runs in production on its own: its lifespan opens its
own pools and clients in the child.
"""

from __future__ import annotations

import multiprocessing
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from infra.http import server as http_server
from tests.helpers import free_port


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` (lifespan included) on a free port in a forked process; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = multiprocessing.get_context("fork").Process(
        target=http_server(app, "127.0.0.1", port).run, name=f"fuzz-{port}", daemon=True
    )
    process.start()
    try:
        deadline = time.monotonic() + 30
        while not _answers(url):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{app.title} did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()  # SIGTERM: uvicorn shuts down gracefully, lifespan included
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any answer: the server is up
    except OSError:
        return False
