"""Every service that keeps data keys in memory forgets an erased person's key on ``ittai.erasure.v1``
(issue 10): the adapters, the shared-view API, the feed API and the portal. Before, a key unwrapped into
such a process stayed there after ``hub erase`` for as long as the process ran (a key store re-checks the
database only when that person is asked for again, and nothing asks for an erased person).

Each service runs on the real stack (its own lifespan, its own follower); the test puts two people's keys
in its key store as a request would, then writes to the erasure topic, on one partition so they are read
in this order: an erasure of the first under a client's ``ce_source`` (forged: not acted on) and the
operator side's erasure of the second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from fastapi.testclient import TestClient

from consumers.feed.api import create_feed_app
from consumers.shared_view.api import build_app as shared_view_app
from contracts.envelope import Family, encode
from hub.portal.app import create_portal_app
from infra.config import Settings
from infra.crypto import KeyStore
from infra.kafka import client_options
from producers.adapters.app import employment_app, welfare_app
from producers.submission import to_event
from tests import factories
from tests.helpers import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES: dict[str, tuple[Callable[[Settings], FastAPI], Callable[[Any], KeyStore]]] = {
    "welfare adapter": (lambda s: welfare_app(s, relay=False), lambda state: state.service.keystore),
    "employment adapter": (lambda s: employment_app(s, relay=False), lambda state: state.service.keystore),
    "shared-view API": (shared_view_app, lambda state: state.keystore),
    "feed API": (create_feed_app, lambda state: state.keystore),
    "portal": (create_portal_app, lambda state: state.keystore),
}


async def _value(value: Any) -> Any:
    return value


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_every_service_keeping_keys_forgets_an_erased_persons_key(
    service: str, pool: asyncpg.Pool, settings: Settings
) -> None:
    make, keystore_of = SERVICES[service]
    own = settings.model_copy(update={"portal_session_secret": "erasure-follower-test"})
    forged_pk, erased_pk = factories.person_key(), factories.person_key()
    with TestClient(make(own)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        await wait_for(lambda: _value(state.erasure_follower.ready.is_set()), until=bool)
        keystore = keystore_of(state)
        async with pool.acquire() as conn:
            await keystore.keys_for(conn, [forged_pk, erased_pk])  # as a request for them would
        assert keystore.holds(forged_pk) and keystore.holds(erased_pk), "control: the keys are in memory"

        producer = AIOKafkaProducer(**client_options(own), acks="all")
        await producer.start()
        try:
            for sub in (
                factories.erasure(forged_pk, source="/authorities/131041"),
                factories.erasure(erased_pk),
            ):
                key, headers, value = encode(to_event(sub, None))
                await producer.send_and_wait(
                    own.topic(Family.ERASURE), value, key=key, headers=headers, partition=0
                )
        finally:
            await producer.stop()

        await wait_for(lambda: _value(keystore.holds(erased_pk)), until=lambda held: not held)
        # Read in order on one partition: the forged erasure came first and was not acted on.
        assert keystore.holds(forged_pk), "an erasure from anyone but the hub's operator side changes nothing"
        assert state.erasure_follower.forgotten == 1
