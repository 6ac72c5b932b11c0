"""The trust boundary on the real stack (issue 10): the attack of the issue, end to end through the HTTP
adapters, Kafka, the shared-view projection and the shared-view API — each rule with its control.

Person Q registers at Kawaguchi's joint site (112038-01, office 1102) and consents to share with Kawaguchi
and office 1102 only. Shinjuku (131041) knows Q's key (it is the Kafka record key).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from consumers.agreements import add_agreement
from consumers.catchup import end_offsets, run_until
from consumers.runtime import ConsumerRuntime
from consumers.shared_view.api import build_app
from consumers.shared_view.handler import SharedViewHandler
from contracts.envelope import Family, encode
from infra.auth import AuthError, OrgKind, Role, add_client
from infra.config import Settings
from infra.kafka import client_options
from infra.signing import erasure_signer
from producers.adapters.app import employment_app, welfare_app
from producers.adapters.serve import running
from producers.adapters.sites import add_sites
from producers.submission import Submission, to_event
from tests import factories
from tests.helpers import free_port, wait_for

KAWAGUCHI, KAWAGUCHI_SITE, KAWAGUCHI_OFFICE = "112038", "112038-01", "1102"
SHINJUKU, SHINJUKU_SITE, SHINJUKU_OFFICE = "131041", "131041-01", "1301"
NOW = datetime.now(UTC)


@dataclass
class Hub:
    welfare: str
    employment: str
    sv: httpx.AsyncClient
    tokens: dict[str, str]

    def post(self, who: str, family: str, data: dict[str, Any]) -> Any:
        side = "welfare" if who in ("shinjuku", "kawaguchi") else "employment"
        base = self.welfare if side == "welfare" else self.employment
        return _post(base, self.tokens[who], family, data)

    async def read(self, who: str, person: str, purpose: str = "share_registration") -> httpx.Response:
        return await self.sv.get(
            f"/persons/{person}",
            params={"purpose": purpose},
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
        )


async def _post(base: str, token: str, family: str, data: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        return await http.post(f"/v1/{family}", json=data)


@pytest_asyncio.fixture(scope="module")
async def hub(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Hub]:
    specs = {
        "kawaguchi": (OrgKind.AUTHORITY, KAWAGUCHI, Role.PUBLISH),
        "shinjuku": (OrgKind.AUTHORITY, SHINJUKU, Role.PUBLISH),
        "office_1102": (OrgKind.OFFICE, KAWAGUCHI_OFFICE, Role.PUBLISH),
        "office_1301": (OrgKind.OFFICE, SHINJUKU_OFFICE, Role.PUBLISH),
        "kawaguchi_reader": (OrgKind.AUTHORITY, KAWAGUCHI, Role.READ),
        "shinjuku_reader": (OrgKind.AUTHORITY, SHINJUKU, Role.READ),
    }
    tokens: dict[str, str] = {}
    async with pool.acquire() as conn:
        await add_sites(
            conn,
            [(KAWAGUCHI_SITE, KAWAGUCHI_OFFICE, "川口"), (SHINJUKU_SITE, SHINJUKU_OFFICE, "新宿")],
        )
        await add_agreement(
            conn,
            authority=KAWAGUCHI,
            offices=[KAWAGUCHI_OFFICE],
            sites=[],
            purposes=["share_registration", "disclose_placement"],
            valid_from=(NOW - timedelta(days=400)).date(),
            valid_until=None,
            title="川口 協定",
            created_by="test",
        )
        for who, (kind, code, role) in specs.items():
            _, tokens[who] = await add_client(
                conn, name=f"trust {who}", org_kind=kind, org_code=code, roles=frozenset({role})
            )
    app = build_app(settings)
    async with (
        running(welfare_app(settings, relay=False), "127.0.0.1", free_port()) as welfare,
        running(employment_app(settings), "127.0.0.1", free_port()) as employment,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sv") as sv,
    ):
        yield Hub(welfare, employment, sv, tokens)


async def project(settings: Settings, pool: asyncpg.Pool) -> None:
    """Let the relay publish what was accepted, then run the shared view until it caught up."""
    async with pool.acquire() as conn:
        await wait_for(
            lambda: conn.fetchval("SELECT count(*) FROM outbox_pending"),
            until=lambda n: n == 0,
            timeout_s=180,
        )
    handler = SharedViewHandler(settings)
    ends = await end_offsets(settings, handler.topics)
    await run_until(ConsumerRuntime(handler, settings, pool), pool, ends, timeout_s=60)


def signed(at: datetime) -> str:
    return at.isoformat()


def kawaguchi_person(name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Q: registered at Kawaguchi's site, consenting to Kawaguchi and office 1102 only."""
    q = factories.person_key()
    registered = (NOW - timedelta(days=2)).date().isoformat()
    reg = factories.registration(
        q,
        office=KAWAGUCHI_OFFICE,
        site=KAWAGUCHI_SITE,
        authority=KAWAGUCHI,
        registered_on=registered,
        personal={"name": name, "birth_date": "1988-06-01", "address": "埼玉県川口市1-2-3"},
    ).data
    consent = factories.consent(
        q,
        recipients=[{"kind": "authority", "code": KAWAGUCHI}, {"kind": "office", "code": KAWAGUCHI_OFFICE}],
        scopes=["share_registration"],
        valid_from=registered,
        captured={
            "side": "hello_work",
            "site": KAWAGUCHI_SITE,
            "channel": "paper_form",
            "signed_at": signed(NOW - timedelta(days=2)),
        },
    ).data
    return q, reg, consent


def shinjuku_consent(q: str, at: datetime) -> dict[str, Any]:
    return factories.consent(
        q,
        recipients=[{"kind": "authority", "code": SHINJUKU}],
        scopes=["share_registration"],
        valid_from=(at.date() - timedelta(days=1)).isoformat(),
        captured={
            "side": "authority",
            "site": SHINJUKU_SITE,
            "channel": "authority_counter",
            "signed_at": signed(at),
        },
    ).data


async def test_another_authority_cannot_make_itself_a_holder_and_read(
    hub: Hub, pool: asyncpg.Pool, settings: Settings
) -> None:
    """The issue's story: a referral at Shinjuku's own site, then a consent "signed" at its own counter
    listing itself, then a read. Before: 202, 202, 200 with Q's name."""
    name = f"標的{uuid.uuid4().hex[:8]}"
    q, reg, consent = kawaguchi_person(name)
    assert (await hub.post("office_1102", "registration", reg)).status_code == 202
    assert (await hub.post("office_1102", "consent", consent)).status_code == 202

    referral = factories.referral(q, authority=SHINJUKU, site=SHINJUKU_SITE).data
    response = await hub.post("shinjuku", "referral", referral)
    assert response.status_code == 403, response.text
    assert "P3: the person is held by other organisations" in response.json()["error"]
    response = await hub.post("shinjuku", "consent", shinjuku_consent(q, NOW - timedelta(hours=1)))
    assert response.status_code == 403 and "P4: authority:131041 holds no registration" in response.text
    # An office with a newer registration of Q at its own site is no holder either (P3).
    newer = reg | {"office": SHINJUKU_OFFICE, "site": SHINJUKU_SITE, "authority": SHINJUKU}
    response = await hub.post("office_1301", "registration", newer)
    assert response.status_code == 403 and "P3" in response.text

    await project(settings, pool)
    refused = await hub.read("shinjuku_reader", q)
    assert refused.status_code == 403 and name not in refused.text
    granted = await hub.read("kawaguchi_reader", q)  # control: the holder named in the consent reads
    assert granted.status_code == 200 and granted.json()["name"] == name


async def test_a_consent_dated_in_the_future_is_refused(hub: Hub) -> None:
    _q, reg, consent = kawaguchi_person(f"未来{uuid.uuid4().hex[:8]}")
    assert (await hub.post("office_1102", "registration", reg)).status_code == 202
    year_2099 = consent | {"captured": consent["captured"] | {"signed_at": "2099-01-01T10:00:00+09:00"}}
    response = await hub.post("office_1102", "consent", year_2099)
    assert response.status_code == 403 and "P6: captured.signed_at is later than now" in response.text
    before_registration = consent | {
        "captured": consent["captured"] | {"signed_at": signed(NOW - timedelta(days=30))}
    }
    response = await hub.post("office_1102", "consent", before_registration)
    assert (
        response.status_code == 403 and "P6: captured.signed_at is before the registration" in response.text
    )
    assert (await hub.post("office_1102", "consent", consent)).status_code == 202  # control


async def test_the_withdrawal_wins_from_its_202_on(hub: Hub, pool: asyncpg.Pool, settings: Settings) -> None:
    name = f"撤回{uuid.uuid4().hex[:8]}"
    q, reg, consent = kawaguchi_person(name)
    assert (await hub.post("office_1102", "registration", reg)).status_code == 202
    assert (await hub.post("office_1102", "consent", consent)).status_code == 202
    await project(settings, pool)
    assert (await hub.read("kawaguchi_reader", q)).status_code == 200  # control: readable before

    withdrawal = consent | {
        "version": 2,
        "action": "withdrawn",
        "scopes": [],
        "captured": consent["captured"] | {"channel": "hello_work_counter", "signed_at": signed(NOW)},
    }
    assert (await hub.post("office_1102", "consent", withdrawal)).status_code == 202
    # No projection has run since: the fence written with the withdrawal refuses the read already.
    response = await hub.read("kawaguchi_reader", q)
    assert response.status_code == 403 and name not in response.text and "P7" in response.text

    # Whatever arrives later and was signed before the withdrawal grants nothing: a higher version of the
    # withdrawn record, or another record.
    late_version = consent | {"version": 3, "action": "changed"}
    response = await hub.post("office_1102", "consent", late_version)
    assert response.status_code == 403 and "P7" in response.text
    other = consent | {"consent_id": uuid.uuid4().hex}
    other["captured"] = other["captured"] | {"signed_at": signed(NOW - timedelta(minutes=1))}
    assert (await hub.post("office_1102", "consent", other)).status_code == 403
    await project(settings, pool)
    assert (await hub.read("kawaguchi_reader", q)).status_code == 403


async def test_nothing_signed_at_the_withdrawals_instant_grants(
    hub: Hub, pool: asyncpg.Pool, settings: Settings
) -> None:
    """P7 is "at or before": a version signed at the withdrawal's very instant (two paper forms of one
    day keyed date-only tie at its midnight) is refused at the adapter, and one that reaches the topic
    anyway puts nothing of the person back in the view (the reads refused it already; the view kept the
    person's record, name and all, and the feed's individual list disclosed them)."""
    name = f"同時{uuid.uuid4().hex[:8]}"
    q, reg, consent = kawaguchi_person(name)
    assert (await hub.post("office_1102", "registration", reg)).status_code == 202
    assert (await hub.post("office_1102", "consent", consent)).status_code == 202
    await project(settings, pool)
    assert (await hub.read("kawaguchi_reader", q)).status_code == 200  # control: readable before

    at = signed(NOW - timedelta(days=1))
    withdrawal = consent | {"version": 2, "action": "withdrawn", "scopes": [],
                            "captured": consent["captured"] | {"signed_at": at}}  # fmt: skip
    assert (await hub.post("office_1102", "consent", withdrawal)).status_code == 202
    same_instant = consent | {
        "version": 3,
        "action": "changed",
        "captured": consent["captured"] | {"signed_at": at},
    }
    response = await hub.post("office_1102", "consent", same_instant)
    assert response.status_code == 403 and "P7" in response.text, response.text

    # Written to the topic by something that skipped the adapter: the projection decides by rule 6 too.
    event = to_event(
        Submission(Family.CONSENT, f"/hellowork/offices/{KAWAGUCHI_OFFICE}", NOW, same_instant), None
    )
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        key, headers, value = encode(event)
        await producer.send_and_wait(settings.topic(Family.CONSENT), value, key=key, headers=headers)
    finally:
        await producer.stop()
    await project(settings, pool)
    async with pool.acquire() as conn:
        kept = await conn.fetchval("SELECT version FROM sv_consents WHERE person_key = $1", q)
        assert kept == 3  # the case is what it says: the version signed at the instant is kept
        assert await conn.fetchval("SELECT count(*) FROM sv_persons WHERE person_key = $1", q) == 0
    response = await hub.read("kawaguchi_reader", q)
    assert response.status_code == 403 and name not in response.text


async def test_offices_publish_only_at_registered_sites_of_their_own(hub: Hub) -> None:
    """Office 1301 at site 112038-01 (registered to 1102) and at 112038-07 (in no registry): 202 before."""
    q = factories.person_key()
    at_other = factories.registration(
        q, office=SHINJUKU_OFFICE, site=KAWAGUCHI_SITE, authority=KAWAGUCHI
    ).data
    response = await hub.post("office_1301", "registration", at_other)
    assert response.status_code == 403 and "P2: site: registered to another office" in response.text
    placement = factories.placement(q, office=SHINJUKU_OFFICE, site=KAWAGUCHI_SITE).data
    assert (await hub.post("office_1301", "placement", placement)).status_code == 403
    unregistered = at_other | {"site": "112038-07"}
    response = await hub.post("office_1301", "registration", unregistered)
    assert response.status_code == 403 and "P2: site: not in the sites registry" in response.text
    own = factories.registration(q, office=SHINJUKU_OFFICE, site=SHINJUKU_SITE, authority=SHINJUKU).data
    assert (await hub.post("office_1301", "registration", own)).status_code == 202  # control


async def test_authorities_report_retention_only_for_their_own_people(hub: Hub) -> None:
    q, reg, _ = kawaguchi_person(f"定着{uuid.uuid4().hex[:8]}")
    assert (await hub.post("office_1102", "registration", reg)).status_code == 202
    retention = factories.retention(q, uuid.uuid4().hex, site=SHINJUKU_SITE).data
    response = await hub.post("shinjuku", "retention", retention)
    assert response.status_code == 403 and "P5: authority:131041 holds no registration" in response.text
    today = NOW.date().isoformat()
    own = factories.retention(q, uuid.uuid4().hex, site=KAWAGUCHI_SITE, checked_on=today).data
    assert (await hub.post("kawaguchi", "retention", own)).status_code == 202  # control
    early = own | {"checked_on": "2025-06-12"}
    response = await hub.post("kawaguchi", "retention", early)
    assert response.status_code == 403 and "P6: checked_on is before the registration" in response.text


async def test_full_width_codes_are_refused(hub: Hub) -> None:
    q = factories.person_key()
    wide = factories.referral(q, authority="１３１０４１", site="１３１０４１-０１").data
    response = await hub.post("shinjuku", "referral", wide)
    assert response.status_code == 422 and "ASCII digits" in response.text
    registration = factories.registration(q, office="１３０１").data
    response = await hub.post("office_1301", "registration", registration)
    assert response.status_code == 422 and "office code must be ASCII digits" in response.text


async def test_idempotency_records_are_keyed_digests_that_expire(hub: Hub, pool: asyncpg.Pool) -> None:
    """Before: an unsalted SHA-256 of the clear body (name, birth date) kept for ever."""
    import hashlib

    import orjson

    q, reg, _ = kawaguchi_person(f"冪等{uuid.uuid4().hex[:8]}")
    key = f"idem-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {hub.tokens['office_1102']}", "Idempotency-Key": key}
    async with httpx.AsyncClient(base_url=hub.employment, headers=headers) as http:
        first = await http.post("/v1/registration", json=reg)
        assert first.status_code == 202
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT request_hash, expires_at > now() + interval '6 days' AS later FROM idempotency_keys "
                "WHERE key = $1",
                key,
            )
        bare = hashlib.sha256(b"registration\x00" + orjson.dumps(reg, option=orjson.OPT_SORT_KEYS)).digest()
        assert row is not None and bytes(row["request_hash"]) != bare and row["later"]
        assert (await http.post("/v1/registration", json=reg)).json()["replayed"] is True
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET expires_at = now() - interval '1 s' WHERE key = $1", key
            )
        again = await http.post("/v1/registration", json=reg | {"registered_on": NOW.date().isoformat()})
        assert again.status_code == 202 and again.json()["replayed"] is False, again.text
    assert q


async def test_nothing_is_accepted_about_an_erased_person(
    hub: Hub, pool: asyncpg.Pool, settings: Settings
) -> None:
    """P9: erasure is final at the edge. Before, a placement posted after ``hub erase`` (the office's own
    system still had the person) was accepted: a new data key was made and the employer sealed under it,
    readable again. Now 403 naming the rule, and no key is made."""
    from consumers.shared_view.erasure import erase_person
    from infra.crypto import KeyStore

    q, reg, consent = kawaguchi_person(f"消去{uuid.uuid4().hex[:8]}")
    assert (await hub.post("office_1102", "registration", reg)).status_code == 202
    async with pool.acquire() as conn:
        await erase_person(
            conn,
            KeyStore.from_settings(settings),
            q,
            requested_by="test",
            namespace=settings.topic_namespace,
            signer=erasure_signer(settings),
        )
    placed_on = NOW.date().isoformat()
    late = factories.placement(q, office=KAWAGUCHI_OFFICE, site=KAWAGUCHI_SITE, placed_on=placed_on).data
    for family, data in (("placement", late), ("consent", consent), ("registration", reg)):
        response = await hub.post("office_1102", family, data)
        assert response.status_code == 403, (family, response.text)
        assert "P9: person_key: the person was erased" in response.text and q not in response.text
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM person_data_keys WHERE person_key = $1", q) == 0


async def test_an_erasure_between_authorisation_and_commit_wins(
    hub: Hub, pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P9 had a race: the edge reads the erasure register before the accepting transaction, so an erasure
    committed between the two let one request through (a new data key made, the employer sealed under it
    and published). The interleaving, step by step (no timing): two placements — Q's and R's — reach one
    group commit, which authorises both (Q is not erased yet); Q's erasure commits right after, before
    the events are sealed and the transaction begins. Now Q's request is refused with P9 and leaves
    nothing (no outbox row, no data key); R's, in the same group, is accepted."""
    from consumers.shared_view.erasure import erase_person
    from infra.auth import authenticate
    from infra.crypto import KeyStore
    from producers.adapters import service as adapter_service
    from producers.adapters.authorization import Adapter
    from producers.adapters.csv_chunks import FamilyRows, Row
    from producers.adapters.service import AdapterService, _Unit

    q, reg_q, _ = kawaguchi_person(f"競合{uuid.uuid4().hex[:8]}")
    r, reg_r, _ = kawaguchi_person(f"無関係{uuid.uuid4().hex[:8]}")
    for reg in (reg_q, reg_r):
        assert (await hub.post("office_1102", "registration", reg)).status_code == 202
    async with pool.acquire() as conn:
        principal = await authenticate(conn, f"Bearer {hub.tokens['office_1102']}")

    real_seal = adapter_service.seal_units
    erased: list[str] = []

    async def erasure_lands_first(*args: Any, **kwargs: Any) -> Any:
        # Authorisation has read the registers by now; the erasure commits before the accepting transaction.
        if not erased:
            async with pool.acquire() as other:
                await erase_person(
                    other, KeyStore.from_settings(settings), q, requested_by="test",
                    namespace=settings.topic_namespace, signer=erasure_signer(settings),
                )  # fmt: skip
            erased.append(q)
        return await real_seal(*args, **kwargs)

    monkeypatch.setattr(adapter_service, "seal_units", erasure_lands_first)
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    units = []
    for person in (q, r):
        data = factories.placement(
            person, office=KAWAGUCHI_OFFICE, site=KAWAGUCHI_SITE, placed_on=NOW.date().isoformat(),
            personal={"employer_name": f"株式会社競合{person[:6]}"},
        ).data  # fmt: skip
        row = FamilyRows(Family.PLACEMENT).judge_body(data)
        assert isinstance(row, Row)
        units.append(_Unit(principal, Family.PLACEMENT, [row], None))
    # Both units are pending before the group commit's first step: one group.
    answers = await asyncio.gather(*(service.committer.commit(u) for u in units), return_exceptions=True)

    assert erased == [q], "control: the erasure landed between authorisation and commit"
    refused, accepted = answers
    assert isinstance(refused, AuthError) and refused.status == 403, refused
    assert "P9" in refused.reason and q not in refused.reason
    assert isinstance(accepted, list) and len(accepted) == 1, accepted
    async with pool.acquire() as conn:
        placements = {
            row["key"].decode()
            for row in await conn.fetch(
                "SELECT key FROM outbox WHERE topic = $1 AND key = ANY($2::bytea[])",
                settings.topic(Family.PLACEMENT),
                [q.encode(), r.encode()],
            )
        }
        keys = await conn.fetchval("SELECT count(*) FROM person_data_keys WHERE person_key = $1", q)
    assert placements == {r}, "only the innocent request's placement is in the outbox"
    assert keys == 0, "no data key is left for the erased person"


async def test_a_consent_signed_at_the_edge_of_time_is_refused_with_422(hub: Hub) -> None:
    """``captured.signed_at`` was any aware time: ``0001-01-01T00:00:00+23:59`` passed the contract, and
    P6's ``astimezone(JST)`` raised OverflowError inside the group commit, which answered 5xx to every
    request of that group. Now the contract refuses it (the field and the rule, never the value)."""
    _q, reg, consent = kawaguchi_person(f"時端{uuid.uuid4().hex[:8]}")
    assert (await hub.post("office_1102", "registration", reg)).status_code == 202
    for edge in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "1999-12-31T23:59:59Z"):
        hostile = consent | {"captured": consent["captured"] | {"signed_at": edge}}
        response = await hub.post("office_1102", "consent", hostile)
        assert response.status_code == 422, (edge, response.text)
        assert "signed_at" in response.text and "2000-01-01" in response.text
        assert edge not in response.text and edge[:10] not in response.text
    assert (await hub.post("office_1102", "consent", consent)).status_code == 202  # control


async def test_one_requests_fault_in_a_group_commit_answers_that_request_alone(
    hub: Hub, pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception nobody foresaw while judging one request of a group commit failed the whole group:
    every other client's request in it was answered 5xx. Now it answers that request alone."""
    from infra.auth import authenticate
    from infra.crypto import KeyStore
    from producers.adapters.authorization import Adapter
    from producers.adapters.csv_chunks import FamilyRows, Row
    from producers.adapters.service import AdapterService, _Unit

    q, reg_q, _ = kawaguchi_person(f"故障{uuid.uuid4().hex[:8]}")
    r, reg_r, _ = kawaguchi_person(f"無関係{uuid.uuid4().hex[:8]}")
    for reg in (reg_q, reg_r):
        assert (await hub.post("office_1102", "registration", reg)).status_code == 202
    async with pool.acquire() as conn:
        principal = await authenticate(conn, f"Bearer {hub.tokens['office_1102']}")
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, KeyStore.from_settings(settings))
    real_authorise = service.authorise_unit

    def faulty_for_q(unit: Any, loaded: Any) -> Any:
        if unit.rows[0].subject == q:
            raise RuntimeError("a fault nobody foresaw")
        return real_authorise(unit, loaded)

    monkeypatch.setattr(service, "authorise_unit", faulty_for_q)
    units = []
    for person in (q, r):
        data = factories.placement(
            person, office=KAWAGUCHI_OFFICE, site=KAWAGUCHI_SITE, placed_on=NOW.date().isoformat(),
        ).data  # fmt: skip
        row = FamilyRows(Family.PLACEMENT).judge_body(data)
        assert isinstance(row, Row)
        units.append(_Unit(principal, Family.PLACEMENT, [row], None))
    # Both units are pending before the group commit's first step: one group.
    answers = await asyncio.gather(*(service.committer.commit(u) for u in units), return_exceptions=True)

    faulty, accepted = answers
    assert isinstance(faulty, RuntimeError), faulty
    assert isinstance(accepted, list) and len(accepted) == 1, accepted


async def test_the_trusted_path_refuses_outside_local_development_and_erased_people_everywhere(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    """The operator's publishing tool (``hub simulate``, ``--from-file`` included: any file, every event
    under the source it names) skipped authorisation wherever it ran. Now it refuses outside a local
    development stack — the command before it reads the file, the library before it touches anything — and
    names the path that authorises (``hub import`` as a client). On a development stack it still skips
    authorisation (a simulated stream speaks for every organisation), but not erasure: before, it
    accepted an erased person's placement and made them a new data key."""
    import sys

    from consumers.shared_view.erasure import erase_person
    from infra.crypto import KeyStore
    from producers.holders import ErasedMeanwhile
    from producers.publish import TrustedPathRefused, publish_submissions

    elsewhere = settings.model_copy(update={"environment": "production", "stack_dir": tmp_path})
    q = factories.person_key()
    stream = [factories.registration(q), factories.consent(q)]
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM outbox")
    with pytest.raises(TrustedPathRefused):
        await publish_submissions(elsewhere, pool, stream, origin="test")
    file = tmp_path / "stream.jsonl"
    file.write_bytes(b"\n".join(s.to_json() for s in stream) + b"\n")
    env = {**os.environ, "HUB_ENVIRONMENT": "production", "HUB_STACK_DIR": str(tmp_path)}
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "simulate", "--from-file", str(file),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await command.communicate()
    assert command.returncode == 2, (out + err).decode()
    assert b"local development stack" in err and b"hub import" in err
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox") == before, "nothing was accepted"

    # On the development stack: P9 holds for the trusted path too.
    await publish_submissions(settings, pool, stream, origin="test")
    async with pool.acquire() as conn:
        await erase_person(
            conn,
            KeyStore.from_settings(settings),
            q,
            requested_by="test",
            namespace=settings.topic_namespace,
            signer=erasure_signer(settings),
        )
    with pytest.raises(ErasedMeanwhile) as refused:
        await publish_submissions(settings, pool, [factories.placement(q)], origin="test")
    assert "P9" in refused.value.reason and q not in refused.value.reason
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM person_data_keys WHERE person_key = $1", q) == 0
        placed = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = $1 AND key = $2",
            settings.topic(Family.PLACEMENT),
            q.encode(),
        )
    assert placed == 0
