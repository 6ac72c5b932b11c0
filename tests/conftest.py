"""Test harness: the real local stack, an isolated database and topic namespace per test session.

Every session gets a fresh PostgreSQL database (``ittai_test_<random>``, dropped at the end) and its own
Kafka topic namespace, so tests never see a previous run's events, parallel sessions never share state,
and a developer's demo data is left alone. The session's database and every namespace it makes topics in
(modules make their own) are leased to the session's process (``devtools.stack.namespaces``) and
deleted at the end; a session starts by sweeping what killed sessions left.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

os.environ.setdefault("HUB_PG_DATABASE", f"ittai_test_{uuid.uuid4().hex[:8]}")
os.environ.setdefault("HUB_TOPIC_NAMESPACE", f"t{uuid.uuid4().hex[:10]}")
os.environ.setdefault("HUB_LOG_LEVEL", "WARNING")
os.environ.setdefault("HUB_ENVIRONMENT", "local")  # the local stack's public demo key and password

import asyncpg
import pytest_asyncio

from devtools import stack
from devtools.stack import namespaces
from infra.config import Settings, get_settings
from infra.db import create_pool, drop_database, recreate_database
from infra.logging import configure_logging
from infra.topics import ensure_topics, namespace_observers
from tests.browser.console_server import RunningConsole, running_console, running_portal
from tests.browser.portal_data import PortalFeed, build_portal_feed
from tests.helpers import delete_namespace, own_namespace


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def live_stack(settings: Settings) -> Iterator[None]:
    stack.ensure_up()
    configure_logging(settings.log_level)
    yield


@pytest_asyncio.fixture(scope="session")
async def pool(live_stack: None, settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    await namespaces.sweep(settings)
    namespaces.claim(settings, database=settings.pg_database)
    namespace_observers.append(namespaces.lease_what_is_made)
    await recreate_database(settings)
    p = await create_pool(settings, max_size=20)
    reports = await ensure_topics(settings)
    assert all(r.status != "mismatch" for r in reports), reports
    yield p
    await p.close()
    await drop_database(settings, missing_ok_if_busy=True)
    await namespaces.release_own(settings)


# --- a topic namespace of a module's (or a test's) own --------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def isolated(pool: asyncpg.Pool, settings: Settings) -> Settings:
    """A topic namespace of the module's own: its consumers see only its tests' records."""
    return await own_namespace(settings)


@pytest_asyncio.fixture(loop_scope="session")
async def isolated_per_test(pool: asyncpg.Pool, settings: Settings) -> Settings:
    """A topic namespace of the test's own (a replay that reads all of it sees only the test's records)."""
    return await own_namespace(settings)


# --- the operator console, for the console's integration and browser tests -----------------------


@pytest.fixture(scope="module")
def console_settings(settings: Settings) -> Settings:
    """A topic namespace of the module's own, so every figure the console shows is exact."""
    return settings.model_copy(
        update={
            "topic_namespace": f"c{uuid.uuid4().hex[:10]}",
            "console_session_secret": "console-test-secret",
            "console_sample_interval_s": 0.5,
        }
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ready(pool: asyncpg.Pool, console_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    await ensure_topics(console_settings)
    yield pool
    await delete_namespace(console_settings)


@pytest.fixture(scope="module")
def console(ready: asyncpg.Pool, console_settings: Settings) -> Iterator[RunningConsole]:
    with running_console(console_settings, sample=True) as running:
        yield running


# --- the feed portal, for the portal's integration and browser tests ----------------------------------


@pytest.fixture(scope="session")
def portal_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"topic_namespace": f"p{uuid.uuid4().hex[:10]}", "portal_session_secret": "portal-test-secret"}
    )


@pytest_asyncio.fixture(scope="session")
async def portal_feed(pool: asyncpg.Pool, portal_settings: Settings) -> AsyncIterator[PortalFeed]:
    yield await build_portal_feed(pool, portal_settings)
    await delete_namespace(portal_settings)


@pytest.fixture(scope="session")
def portal(portal_feed: PortalFeed, portal_settings: Settings) -> Iterator[RunningConsole]:
    with running_portal(portal_settings) as running:
        yield running
