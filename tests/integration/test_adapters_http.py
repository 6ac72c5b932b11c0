"""The two adapters on the real stack: HTTP and CSV for every family, errors, authorisation, idempotency,
batch files in CP932 with era dates, and no personal data in Kafka or in logs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from contracts.envelope import Family, decode
from contracts.events import PlacementPersonal, RegistrationPersonal, Sealed
from infra.auth import OrgKind, Role, add_client, revoke_client
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from infra.crypto import KeyStore, open_sealed
from producers.adapters.app import employment_app, welfare_app
from producers.adapters.serve import running
from producers.adapters.sites import add_sites
from tests import factories
from tests.helpers import free_port, read_topic, wait_published

OTHER_SITE = "112038-01"
OTHER_OFFICE = "1102"


@dataclass
class Adapters:
    welfare: str
    employment: str
    tokens: dict[str, str]
    ids: dict[str, str]

    def client(self, who: str, adapter: str) -> httpx.AsyncClient:
        base = self.welfare if adapter == "welfare" else self.employment
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who in self.tokens else {}
        return httpx.AsyncClient(base_url=base, headers=headers, timeout=30)


async def _clients(conn: asyncpg.Connection) -> tuple[dict[str, str], dict[str, str]]:
    specs = {
        "shinjuku": (OrgKind.AUTHORITY, factories.AUTHORITY, {Role.PUBLISH}),
        "kawaguchi": (OrgKind.AUTHORITY, factories.OTHER_AUTHORITY, {Role.PUBLISH}),
        "office": (OrgKind.OFFICE, factories.OFFICE, {Role.PUBLISH}),
        "other_office": (OrgKind.OFFICE, OTHER_OFFICE, {Role.PUBLISH}),
        "national": (OrgKind.HELLO_WORK_NATIONAL, "*", {Role.PUBLISH}),
        "reader": (OrgKind.AUTHORITY, factories.AUTHORITY, {Role.READ}),
    }
    tokens, ids = {}, {}
    for who, (kind, code, roles) in specs.items():
        ids[who], tokens[who] = await add_client(
            conn, name=f"test {who}", org_kind=kind, org_code=code, roles=frozenset(roles)
        )
    return tokens, ids


@pytest_asyncio.fixture(scope="module")
async def adapters(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Adapters]:
    async with pool.acquire() as conn:
        await add_sites(
            conn, [(factories.SITE, factories.OFFICE, "新宿"), (OTHER_SITE, OTHER_OFFICE, "川口")]
        )
        tokens, ids = await _clients(conn)
    async with (
        running(welfare_app(settings), "127.0.0.1", free_port()) as welfare,
        running(employment_app(settings), "127.0.0.1", free_port()) as employment,
    ):
        yield Adapters(welfare, employment, tokens, ids)


def welfare_consent(pk: str, **over: Any) -> dict[str, Any]:
    data = factories.consent(pk).data
    data["captured"] = {**data["captured"], "side": "authority", "channel": "authority_counter"}
    data.update(over)
    return data


def by_adapter(pk: str) -> list[tuple[str, str, Family, dict[str, Any]]]:
    """(who, adapter, family, data): every family through the adapter(s) that carry it."""
    pid = uuid.uuid4().hex
    return [
        ("shinjuku", "welfare", Family.REFERRAL, factories.referral(pk).data),
        ("office", "employment", Family.REGISTRATION, factories.registration(pk).data),
        ("shinjuku", "welfare", Family.CONSENT, welfare_consent(pk)),
        ("office", "employment", Family.CONSENT, factories.consent(pk, version=2).data),
        ("office", "employment", Family.PLACEMENT, factories.placement(pk, placement_id=pid).data),
        ("shinjuku", "welfare", Family.RETENTION, factories.retention(pk, pid).data),
        ("office", "employment", Family.RETENTION, factories.retention(pk, pid, checkpoint_months=3).data),
    ]


async def records_for(settings: Settings, family: Family, event_ids: set[str]) -> list[Any]:
    out = []
    for rec in await read_topic(settings, settings.topic(family)):
        # Only these events are decoded: other modules put hostile records on the session's topics too.
        if dict(rec.headers).get("ce_id", b"").decode() in event_ids:
            out.append((rec, decode(rec.key, rec.headers, rec.value)))
    return out


async def test_every_family_over_http_reaches_kafka_sealed(
    adapters: Adapters, pool: asyncpg.Pool, settings: Settings
) -> None:
    pk = factories.person_key()
    accepted: dict[str, tuple[Family, str]] = {}
    with capture_logs() as logs:
        for who, adapter, family, data in by_adapter(pk):
            async with adapters.client(who, adapter) as http:
                response = await http.post(f"/v1/{family.value}", json=data)
            assert response.status_code == 202, (family, response.text)
            accepted[response.json()["event_id"]] = (family, who)
        await wait_published(pool, list(accepted))

    name, employer = "髙橋 花子", "株式会社𠮷野ケアサービス"
    keystore = KeyStore.from_settings(settings)
    async with pool.acquire() as conn:
        key = (await keystore.existing_keys(conn, [pk]))[pk]
    seen = set()
    for family in Family:
        for rec, event in await records_for(settings, family, set(accepted)):
            seen.add(event.id)
            raw = rec.value + b"".join(v for _, v in rec.headers)
            assert name.encode() not in raw and employer.encode() not in raw and b"1988-06-01" not in raw
            who = accepted[event.id][1]
            expected = "/authorities/131041" if who == "shinjuku" else "/hellowork/offices/1301"
            assert event.source == expected  # derived from the credential, not from the body
            if family is Family.REGISTRATION:
                sealed = Sealed.model_validate(event.data.personal.model_dump())
                assert RegistrationPersonal.model_validate(open_sealed(key, pk, sealed)).name == name
            if family is Family.PLACEMENT:
                sealed = Sealed.model_validate(event.data.personal.model_dump())
                assert (
                    PlacementPersonal.model_validate(open_sealed(key, pk, sealed)).employer_name == employer
                )
    assert seen == set(accepted), "every accepted event is in Kafka"
    assert name not in repr(logs) and employer not in repr(logs)


async def test_every_family_through_csv(adapters: Adapters, pool: asyncpg.Pool, settings: Settings) -> None:
    pk = factories.person_key()
    for who, adapter, family, data in by_adapter(pk):
        content = write_csv(family.value, [data], japanese=family is not Family.PLACEMENT)
        async with adapters.client(who, adapter) as http:
            response = await http.post(
                f"/v1/{family.value}/csv", files={"file": ("f.csv", content, "text/csv")}
            )
        assert response.status_code == 202, response.text
        assert response.json() | {"errors": []} == {
            "encoding": "utf-8",
            "rows": 1,
            "accepted": 1,
            "duplicates": 0,
            "rejected": 0,
            "file_error": None,
            "errors": [],
        }, (family, response.json())
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id, origin FROM outbox WHERE key = $1", pk.encode())
    assert sorted(r["origin"] for r in rows) == sorted(["welfare-csv"] * 3 + ["employment-csv"] * 4)
    await wait_published(pool, [r["event_id"] for r in rows])


async def test_csv_rows_carry_the_optional_fields_of_v1_1_into_their_events(
    adapters: Adapters, pool: asyncpg.Pool
) -> None:
    """Before: the JSON API took foreign_national, prior_application_office and team_support_from, and a
    file with those columns was refused as a whole (unknown columns), so a CSV client could not send them."""
    pk = factories.person_key()
    sent = [
        ("shinjuku", "welfare", Family.REFERRAL, factories.referral(pk, team_support_from="2025-05-20").data),
        (
            "office",
            "employment",
            Family.REGISTRATION,
            factories.registration(pk, foreign_national=True, prior_application_office=OTHER_OFFICE).data,
        ),
        ("office", "employment", Family.PLACEMENT, factories.placement(pk, foreign_national=True).data),
    ]
    for who, adapter, family, data in sent:
        content = write_csv(family.value, [data], japanese=family is not Family.PLACEMENT, era=True)
        async with adapters.client(who, adapter) as http:
            response = await http.post(
                f"/v1/{family.value}/csv", files={"file": ("f.csv", content, "text/csv")}
            )
        assert response.status_code == 202 and response.json()["accepted"] == 1, response.text
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT key, headers, value FROM outbox WHERE key = $1", pk.encode())
    events = {
        e.family: e.data
        for e in (
            decode(r["key"], [(k, v.encode()) for k, v in r["headers"].items()], r["value"]) for r in rows
        )
    }
    assert str(events[Family.REFERRAL].team_support_from) == "2025-05-20"
    assert events[Family.REGISTRATION].foreign_national is True
    assert events[Family.REGISTRATION].prior_application_office == OTHER_OFFICE
    assert events[Family.PLACEMENT].foreign_national is True


VALIDATION_CASES = [
    (
        "authority",
        {"authority": "112039", "site": "112039-01"},
        "authority: check digit (sixth digit) does not match the first five",
    ),
    ("site", {"site": "11203-01"}, "site: String should match pattern"),
    (
        "unknown field",
        {"nickname": "x"},
        "(event): unknown field (not in the contract; rejected rather than dropped)",
    ),
    ("missing field", {"programme": None}, "programme: Field required"),
    ("enum", {"programme": "gardening"}, "programme: Input should be 'public_assistance_employment'"),
    ("date", {"referred_on": "2025-02-30"}, "referred_on: Input should be a valid date"),
    (
        "site of another authority",
        {"site": "112038-01"},
        "(event): site is not run by authority (its first six digits)",
    ),
    (
        "personal",
        {"personal": {"case_number": ""}},
        "personal.case_number: String should have at least 1 character",
    ),
]


@pytest.mark.parametrize(
    ("name", "change", "message"), VALIDATION_CASES, ids=[c[0] for c in VALIDATION_CASES]
)
async def test_validation_errors_name_field_rule_and_value(
    adapters: Adapters, pool: asyncpg.Pool, name: str, change: dict[str, Any], message: str
) -> None:
    data = factories.referral(factories.person_key()).data | change
    data = {k: v for k, v in data.items() if v is not None}
    async with adapters.client("shinjuku", "welfare") as http:
        response = await http.post("/v1/referral", json=data)
    assert response.status_code == 422, response.text
    messages = [e["message"] for e in response.json()["errors"]]
    assert any(m.startswith(message) for m in messages), messages
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", data["person_key"].encode())
            == 0
        )


async def test_bad_json_and_wrong_shapes(adapters: Adapters) -> None:
    async with adapters.client("office", "employment") as http:
        bad = await http.post(
            "/v1/placement", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "(body)"
        assert "not valid JSON" in bad.json()["errors"][0]["rule"]
        listed = await http.post("/v1/placement", json=[1])
        assert listed.status_code == 422 and "expected a JSON object" in listed.json()["errors"][0]["rule"]
        good = factories.placement(factories.person_key()).data
        broken = factories.placement(factories.person_key(), occupation={"group": "16"}).data
        batch = await http.post("/v1/placement/batch", json=[good, broken])
        assert batch.status_code == 422
        assert batch.json()["errors"][0]["message"].startswith(
            "[1].occupation.group: String should match pattern"
        )
        async with adapters.client("office", "welfare") as wrong:
            assert (await wrong.post("/v1/registration", json=good)).status_code in (403, 404)


async def test_rejections_are_recorded_without_values(adapters: Adapters, pool: asyncpg.Pool) -> None:
    secret_name = "秘密 太郎"
    reg = factories.registration(factories.person_key()).data
    reg["personal"] = {**reg["personal"], "name": secret_name, "birth_date": "昭和99年1月1日"}
    async with pool.acquire() as conn:  # the register is the session's: only this request's rows count
        before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM adapter_rejections")
    with capture_logs() as logs:
        async with adapters.client("office", "employment") as http:
            response = await http.post("/v1/registration", json=reg)
    assert response.status_code == 422
    assert response.json()["errors"][0]["message"].startswith(
        "personal.birth_date: must be a date written YYYY-MM-DD"
    )
    async with pool.acquire() as conn:
        rules = [
            r["rule"] for r in await conn.fetch("SELECT rule FROM adapter_rejections WHERE id > $1", before)
        ]
    assert "personal.birth_date: date_spelling" in rules
    assert not any(secret_name in r or "昭和99" in r for r in rules)
    assert [e["event"] for e in logs] == ["input rejected"], "the rejection was logged"
    assert secret_name not in repr(logs) and "昭和99" not in repr(logs)


async def test_authority_cannot_publish_for_another_authority(adapters: Adapters) -> None:
    pk = factories.person_key()
    other = factories.referral(pk, authority=factories.OTHER_AUTHORITY, site=OTHER_SITE).data
    async with adapters.client("shinjuku", "welfare") as http:
        response = await http.post("/v1/referral", json=other)
        assert response.status_code == 403
        assert response.json()["error"].endswith(
            "(authority:131041) may not publish a referral by another authority"
        )
        retention = factories.retention(pk, uuid.uuid4().hex, site=OTHER_SITE).data
        response = await http.post("/v1/retention", json=retention)
        assert (
            response.status_code == 403
            and "P2: site: run by another authority than the publisher" in response.json()["error"]
        )
        hw_consent = factories.consent(pk).data  # signed at Hello Work: not the welfare adapter's to carry
        response = await http.post("/v1/consent", json=hw_consent)
        assert (
            response.status_code == 403 and "goes through the employment adapter" in response.json()["error"]
        )
    async with adapters.client("kawaguchi", "welfare") as http:
        assert (await http.post("/v1/referral", json=other)).status_code == 202


async def test_office_publishes_only_for_its_own_office_and_sites(adapters: Adapters) -> None:
    pk = factories.person_key()
    async with adapters.client("other_office", "employment") as http:
        response = await http.post("/v1/placement", json=factories.placement(pk).data)
        assert (
            response.status_code == 403
            and "P2: site: registered to another office than the publisher" in response.json()["error"]
        )
        response = await http.post("/v1/retention", json=factories.retention(pk, uuid.uuid4().hex).data)
        assert response.status_code == 403 and "registered to another office" in response.json()["error"]
        unknown = factories.retention(pk, uuid.uuid4().hex, site="131041-09").data
        response = await http.post("/v1/retention", json=unknown)
        assert response.status_code == 403 and "not in the sites registry" in response.json()["error"]
    async with adapters.client("national", "employment") as http:
        assert (await http.post("/v1/placement", json=factories.placement(pk).data)).status_code == 202
    async with adapters.client("office", "welfare") as http:
        response = await http.post("/v1/referral", json=factories.referral(pk).data)
        assert (
            response.status_code == 403 and "the welfare adapter takes clients of authority" in response.text
        )


async def test_authentication_failures_are_401_with_a_reason(adapters: Adapters, pool: asyncpg.Pool) -> None:
    data = factories.referral(factories.person_key()).data
    async with adapters.client("nobody", "welfare") as http:
        response = await http.post("/v1/referral", json=data)
        assert response.status_code == 401 and "missing Authorization header" in response.json()["error"]
        wrong = adapters.tokens["shinjuku"][:-3] + "xyz"
        response = await http.post("/v1/referral", json=data, headers={"Authorization": f"Bearer {wrong}"})
        assert response.status_code == 401 and response.json()["error"] == "unknown client or wrong secret"
    async with adapters.client("reader", "welfare") as http:
        response = await http.post("/v1/referral", json=data)
        assert response.status_code == 403 and "lacks role 'publish'" in response.json()["error"]


async def test_revoked_credentials_fail(pool: asyncpg.Pool, adapters: Adapters) -> None:
    async with pool.acquire() as conn:
        client_id, token = await add_client(
            conn,
            name="soon revoked",
            org_kind=OrgKind.AUTHORITY,
            org_code="131041",
            roles=frozenset({Role.PUBLISH}),
        )
    data = factories.referral(factories.person_key()).data
    async with httpx.AsyncClient(
        base_url=adapters.welfare, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        assert (await http.post("/v1/referral", json=data)).status_code == 202
        async with pool.acquire() as conn:
            assert await revoke_client(conn, client_id)
        response = await http.post("/v1/referral", json=factories.referral(factories.person_key()).data)
    assert response.status_code == 401
    assert response.json()["error"].startswith(f"credentials of client {client_id} were revoked at ")


async def test_revocation_is_honoured_despite_the_credential_cache(
    pool: asyncpg.Pool, adapters: Adapters
) -> None:
    """The adapter reuses a verified credential for up to a second, but a revoked client gets neither an
    event accepted nor a replayed answer once the revocation has committed, and no data key is made."""
    async with pool.acquire() as conn:
        client_id, token = await add_client(
            conn,
            name="cached",
            org_kind=OrgKind.OFFICE,
            org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )
    data = factories.placement(factories.person_key()).data
    newcomer = factories.person_key()
    key = {"Idempotency-Key": f"cached-{uuid.uuid4().hex}"}
    async with httpx.AsyncClient(
        base_url=adapters.employment, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        assert (await http.post("/v1/placement", json=data, headers=key)).status_code == 202
        async with pool.acquire() as conn:
            assert await revoke_client(conn, client_id)
        retry = await http.post("/v1/placement", json=data, headers=key)
        fresh = await http.post("/v1/placement/batch", json=[factories.placement(newcomer).data])
    for response in (retry, fresh):
        assert response.status_code == 401, response.text
        assert response.json()["error"].startswith(f"credentials of client {client_id} were revoked at ")
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM person_data_keys WHERE person_key = $1", newcomer) == 0
        )
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", newcomer.encode()) == 0


async def test_personal_block_of_the_wrong_type_is_a_422(adapters: Adapters) -> None:
    async with adapters.client("office", "employment") as http:
        for personal in (1, "name", ["x"]):
            data = factories.registration(factories.person_key()).data | {"personal": personal}
            response = await http.post("/v1/registration", json=data)
            assert response.status_code == 422, response.text
            assert [e["field"] for e in response.json()["errors"]] == ["personal"]


async def test_idempotent_retries_create_one_event(adapters: Adapters, pool: asyncpg.Pool) -> None:
    pk = factories.person_key()
    data = factories.placement(pk).data
    key = f"retry-{uuid.uuid4().hex}"
    async with adapters.client("office", "employment") as http:
        first = await http.post("/v1/placement", json=data, headers={"Idempotency-Key": key})
        again = await http.post("/v1/placement", json=data, headers={"Idempotency-Key": key})
        racing = await asyncio.gather(
            *(http.post("/v1/placement", json=data, headers={"Idempotency-Key": key}) for _ in range(5))
        )
        # Concurrent first attempts of a new key also make one event.
        key2 = f"race-{uuid.uuid4().hex}"
        data2 = factories.placement(pk).data
        firsts = await asyncio.gather(
            *(http.post("/v1/placement", json=data2, headers={"Idempotency-Key": key2}) for _ in range(6))
        )
        changed = await http.post(
            "/v1/placement", json=data | {"placed_on": "2025-05-13"}, headers={"Idempotency-Key": key}
        )
    assert first.status_code == 202 and first.json()["replayed"] is False
    assert again.status_code == 202 and again.json() == {
        "event_id": first.json()["event_id"],
        "replayed": True,
    }
    assert again.headers["Idempotent-Replayed"] == "true"
    assert {r.json()["event_id"] for r in racing} == {first.json()["event_id"]}
    assert all(r.status_code == 202 for r in firsts) and len({r.json()["event_id"] for r in firsts}) == 1
    assert (
        changed.status_code == 409
        and "already used for a different placement request" in changed.json()["error"]
    )
    assert key not in changed.text, "the 409 repeats the Idempotency-Key it refuses"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", pk.encode()) == 2


def _cp932_referrals(pks: list[str]) -> bytes:
    lines = ["送り込みID,個人キー,自治体コード,拠点ID,支援事業,送り込み日,ケース番号"]
    dates = ["令和6年4月1日", "R6.4.1", "平成31年4月30日", "令和元年5月1日", "Ｒ６．４．２"]
    for pk, when in zip(pks, dates, strict=True):
        lines.append(
            f"{uuid.uuid4().hex},{pk},131041,131041-01,生活保護受給者等就労自立促進事業,{when},ケース-{pk[:4]}"
        )
    return ("\r\n".join(lines) + "\r\n").encode("cp932")


async def test_cp932_file_with_era_dates(adapters: Adapters, pool: asyncpg.Pool) -> None:
    pks = [factories.person_key() for _ in range(5)]
    content = _cp932_referrals(pks)
    with pytest.raises(UnicodeDecodeError):
        content.decode("utf-8")
    async with adapters.client("shinjuku", "welfare") as http:
        response = await http.post("/v1/referral/csv", files={"file": ("送り込み.csv", content, "text/csv")})
    body = response.json()
    assert response.status_code == 202 and body["encoding"] == "cp932", body
    assert (body["accepted"], body["rejected"]) == (5, 0), body["errors"]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT convert_from(value, 'UTF8')::jsonb ->> 'referred_on' AS d FROM outbox WHERE key = ANY($1::bytea[])",
            [p.encode() for p in pks],
        )
    assert sorted(r["d"] for r in rows) == [
        "2019-04-30",
        "2019-05-01",
        "2024-04-01",
        "2024-04-01",
        "2024-04-02",
    ]


async def test_file_with_half_its_rows_broken(adapters: Adapters, pool: asyncpg.Pool) -> None:
    pks = [factories.person_key() for _ in range(10)]
    good = [factories.placement(pk).data for pk in pks[:5]]
    broken = [
        factories.placement(pks[5], office="13O1").data,
        factories.placement(pks[6], placed_on="R7.2.29").data,
        factories.placement(pks[7], route="walked_in").data,
        factories.placement(pks[8], office="1102", site="112038-01").data,  # not this office's
        factories.placement(pks[9], occupation={"group": "99"}).data,
    ]
    rows = [r for pair in zip(good, broken, strict=True) for r in pair]
    content = write_csv("placement", rows, japanese=True, era=True, crlf=False)
    async with adapters.client("office", "employment") as http:
        response = await http.post("/v1/placement/csv", files={"file": ("p.csv", content, "text/csv")})
        again = await http.post("/v1/placement/csv", files={"file": ("p.csv", content, "text/csv")})
    body = response.json()
    assert (body["rows"], body["accepted"], body["rejected"], body["duplicates"]) == (10, 5, 5, 0)
    by_line = {e["line"]: e["message"] for e in body["errors"]}
    assert sorted(by_line) == [3, 5, 7, 9, 11]
    assert by_line[3].startswith("line 3: 安定所コード (office): String should match pattern")
    assert by_line[5] == "line 5: 就職日 (placed_on): not a real date: the day is outside its month"
    assert by_line[7].startswith("line 7: 就職経路 (route): Input should be")
    assert (
        by_line[9].startswith("line 9: (row): client")
        and "P2: site: registered to another office than the publisher" in by_line[9]
    )
    assert by_line[11].startswith("line 11: 職業 (occupation.group): String should match pattern")
    second = again.json()
    assert (second["accepted"], second["duplicates"], second["rejected"]) == (0, 5, 5), (
        "a second import adds nothing"
    )
    async with pool.acquire() as conn:
        n = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE key = ANY($1::bytea[])", [p.encode() for p in pks]
        )
    assert n == 5


async def test_utf8_file_keeps_characters_cp932_cannot_hold(
    adapters: Adapters, pool: asyncpg.Pool, settings: Settings
) -> None:
    pk = factories.person_key()
    reg = factories.registration(pk).data
    reg["personal"] = {**reg["personal"], "name": "𠮷田 髙志"}
    content = b"\xef\xbb\xbf" + write_csv("registration", [reg], japanese=True, era=True)
    async with adapters.client("office", "employment") as http:
        response = await http.post("/v1/registration/csv", files={"file": ("r.csv", content, "text/csv")})
    assert response.json()["accepted"] == 1, response.json()
    keystore = KeyStore.from_settings(settings)
    async with pool.acquire() as conn:
        value = await conn.fetchval(
            "SELECT convert_from(value, 'UTF8')::jsonb FROM outbox WHERE key = $1", pk.encode()
        )
        key = (await keystore.existing_keys(conn, [pk]))[pk]
    assert open_sealed(key, pk, Sealed.model_validate(value["personal"]))["name"] == "𠮷田 髙志"


async def test_file_level_errors(adapters: Adapters) -> None:
    async with adapters.client("shinjuku", "welfare") as http:
        unknown = await http.post(
            "/v1/referral/csv",
            files={"file": ("x.csv", b"referral_id,person_key,colour\r\n", "text/csv")},
        )
        garbage = await http.post(
            "/v1/referral/csv", files={"file": ("x.csv", b"\xff\xfe\xfa\x00", "text/csv")}
        )
    assert unknown.status_code == 422
    message = unknown.json()["errors"][0]["message"]
    assert (
        "column 3 is not a referral column" in message
        and "colour" not in message
        and "missing required column(s)" in message
    )
    assert garbage.status_code == 422 and "neither UTF-8" in garbage.json()["errors"][0]["message"]


PERSONAL_VALUES = [
    "髙橋 花子",
    "タカハシ ハナコ",
    "1988-06-01",
    "03-1234-5678",
    "13010-12345678",
    "SJ-2025-0042",
    "株式会社𠮷野ケアサービス",
    "𠮷田 髙志",
    "ケース-",
]


async def test_no_personal_value_in_any_topic(
    adapters: Adapters, pool: asyncpg.Pool, settings: Settings
) -> None:
    """Runs last in this module: everything the tests above accepted, over HTTP or CSV, is in Kafka sealed."""
    async with pool.acquire() as conn:
        # this session's topics only: other modules (feed, console) publish under namespaces of their own
        ids = [
            r["event_id"]
            for r in await conn.fetch(
                "SELECT event_id FROM outbox WHERE topic = ANY($1::text[])", list(settings.event_topics)
            )
        ]
    await wait_published(pool, ids)
    records = [rec for family in Family for rec in await read_topic(settings, settings.topic(family))]
    assert len(records) >= len(ids) >= 25
    for rec in records:
        raw = (rec.value or b"") + (rec.key or b"") + b"".join(v for _, v in rec.headers)
        for value in PERSONAL_VALUES:
            assert value.encode() not in raw, "personal data travels only sealed"


async def test_a_credential_the_commit_found_revoked_is_forgotten_by_the_cache(
    pool: asyncpg.Pool, settings: Settings, adapters: Adapters
) -> None:
    """Within its entry's life the cache answers a revoked credential's invalid request 422 (it fails
    before the commit); once a commit has answered 401 the entry is gone, and the next request of that
    credential is looked up afresh: 401, whatever it carries. (An hour's entries: no timing; the sites
    are the ``adapters`` fixture's.)"""
    from producers.adapters.app import CredentialCache

    async with pool.acquire() as conn:
        client_id, token = await add_client(
            conn,
            name="forgotten",
            org_kind=OrgKind.OFFICE,
            org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )
    app = employment_app(settings)
    app.state.credentials = CredentialCache(ttl_s=3600)
    invalid = factories.placement(factories.person_key()).data | {"placed_on": "not a date"}
    async with (
        running(app, "127.0.0.1", free_port()) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
    ):
        first = await http.post("/v1/placement", json=factories.placement(factories.person_key()).data)
        async with pool.acquire() as conn:
            assert await revoke_client(conn, client_id)
        cached = await http.post("/v1/placement", json=invalid)
        refused = await http.post("/v1/placement", json=factories.placement(factories.person_key()).data)
        after = await http.post("/v1/placement", json=invalid)
    assert first.status_code == 202, first.text
    assert cached.status_code == 422, "control: the entry still answers before the commit"
    assert refused.status_code == 401, refused.text
    assert after.status_code == 401, after.text
    assert after.json()["error"].startswith(f"credentials of client {client_id} were revoked at ")
