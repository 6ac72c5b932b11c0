"""Who may publish what, without a database: the pure rules of ``producers.adapters.authorization``."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from contracts.envelope import Family
from domain.provenance import Org, SiteEntry
from infra.auth import AuthError, OrgKind, Principal, Role
from infra.codecs.field_errors import FieldError, from_validation_error
from producers.adapters.authorization import Adapter, Context, authorize
from producers.submission import to_event
from tests import factories

PK = "3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"
REGISTRY = {
    "131041-01": SiteEntry("131041-01", "131041", "1301"),
    "112038-01": SiteEntry("112038-01", "112038", "1102"),
}
HELD = {PK: {Org("authority", "131041"): date(2025, 4, 1), Org("office", "1301"): date(2025, 4, 1)}}


def ctx(holders: dict[str, dict[Org, date]] | None = None) -> Context:
    return Context(
        sites=REGISTRY, holders={k: dict(v) for k, v in (HELD if holders is None else holders).items()}
    )


def who(kind: OrgKind, code: str) -> Principal:
    return Principal("c1", "test", kind, code, frozenset({Role.PUBLISH}))


SHINJUKU = who(OrgKind.AUTHORITY, "131041")
KAWAGUCHI = who(OrgKind.AUTHORITY, "112038")
OFFICE = who(OrgKind.OFFICE, "1301")
OTHER_OFFICE = who(OrgKind.OFFICE, "1102")
NATIONAL = who(OrgKind.HELLO_WORK_NATIONAL, "*")


def data(family: Family, **over: Any) -> dict[str, Any]:
    sub = {s.family: s for s in factories.one_of_each(PK)}[family]
    return sub.data | over


def test_authority_publishes_for_itself_only() -> None:
    assert (
        authorize(Adapter.WELFARE, SHINJUKU, Family.REFERRAL, data(Family.REFERRAL), ctx())
        == "/authorities/131041"
    )
    with pytest.raises(AuthError) as info:
        authorize(Adapter.WELFARE, KAWAGUCHI, Family.REFERRAL, data(Family.REFERRAL), ctx())
    assert info.value.status == 403 and "may not publish a referral by another authority" in info.value.reason
    with pytest.raises(AuthError, match="P2: site: run by another authority than the publisher"):
        authorize(Adapter.WELFARE, KAWAGUCHI, Family.RETENTION, data(Family.RETENTION), ctx())


def test_consent_goes_through_the_side_where_it_was_signed() -> None:
    hello_work_signed = data(Family.CONSENT)
    with pytest.raises(AuthError, match="goes through the employment adapter"):
        authorize(Adapter.WELFARE, SHINJUKU, Family.CONSENT, hello_work_signed, ctx())
    assert (
        authorize(Adapter.EMPLOYMENT, OFFICE, Family.CONSENT, hello_work_signed, ctx())
        == "/hellowork/offices/1301"
    )
    authority_signed = hello_work_signed | {
        "captured": {**hello_work_signed["captured"], "side": "authority"}
    }
    assert (
        authorize(Adapter.WELFARE, SHINJUKU, Family.CONSENT, authority_signed, ctx()) == "/authorities/131041"
    )
    with pytest.raises(AuthError, match="goes through the welfare adapter"):
        authorize(Adapter.EMPLOYMENT, OFFICE, Family.CONSENT, authority_signed, ctx())


def test_office_publishes_for_its_own_office_and_sites() -> None:
    assert authorize(Adapter.EMPLOYMENT, OFFICE, Family.PLACEMENT, data(Family.PLACEMENT), ctx()).endswith(
        "/1301"
    )
    with pytest.raises(AuthError, match="P2: site: registered to another office than the publisher"):
        authorize(Adapter.EMPLOYMENT, OTHER_OFFICE, Family.REGISTRATION, data(Family.REGISTRATION), ctx())
    with pytest.raises(AuthError, match="registered to another office"):
        authorize(Adapter.EMPLOYMENT, OTHER_OFFICE, Family.RETENTION, data(Family.RETENTION), ctx())
    with pytest.raises(AuthError, match="P2: site: not in the sites registry"):
        authorize(
            Adapter.EMPLOYMENT, OFFICE, Family.RETENTION, data(Family.RETENTION, site="131041-07"), ctx()
        )


def test_an_office_publishes_registrations_and_placements_only_at_its_own_registered_sites() -> None:
    """The issue's case: office 1301 at site 112038-01 (registered to another office) and at 112038-07
    (in no registry) — both answered 202 before."""
    for family in (Family.REGISTRATION, Family.PLACEMENT):
        at_other = data(family, site="112038-01", office="1301") | (
            {"authority": "112038"} if family is Family.REGISTRATION else {}
        )
        with pytest.raises(AuthError, match="P2: site: registered to another office than the publisher"):
            authorize(Adapter.EMPLOYMENT, OFFICE, family, at_other, ctx({}))
        unregistered = at_other | {"site": "112038-07"}
        with pytest.raises(AuthError, match="P2: site: not in the sites registry"):
            authorize(Adapter.EMPLOYMENT, OFFICE, family, unregistered, ctx({}))


def test_national_hello_work_covers_every_office() -> None:
    assert authorize(Adapter.EMPLOYMENT, NATIONAL, Family.PLACEMENT, data(Family.PLACEMENT), ctx()) == (
        "/hellowork/offices/1301"
    )
    assert authorize(Adapter.EMPLOYMENT, NATIONAL, Family.RETENTION, data(Family.RETENTION), ctx()).endswith(
        "/1301"
    )
    with pytest.raises(AuthError, match="P2: office: not the office the sites registry holds for the site"):
        authorize(
            Adapter.EMPLOYMENT, NATIONAL, Family.PLACEMENT, data(Family.PLACEMENT, office="4701"), ctx()
        )


def test_clients_of_the_other_side_are_refused() -> None:
    with pytest.raises(
        AuthError, match="the welfare adapter takes clients of authority; client c1 is office:1301"
    ):
        authorize(Adapter.WELFARE, OFFICE, Family.RETENTION, data(Family.RETENTION), ctx())
    with pytest.raises(
        AuthError, match="the employment adapter takes clients of hello_work_national or office"
    ):
        authorize(Adapter.EMPLOYMENT, SHINJUKU, Family.RETENTION, data(Family.RETENTION), ctx())


def test_a_registration_and_its_consent_travel_in_one_batch() -> None:
    """Holding gained by an intake event counts for the events after it in the same request."""
    c = ctx({})
    authorize(Adapter.EMPLOYMENT, OFFICE, Family.REGISTRATION, data(Family.REGISTRATION), c)
    assert authorize(Adapter.EMPLOYMENT, OFFICE, Family.CONSENT, data(Family.CONSENT), c).endswith("/1301")
    assert set(c.holders[PK]) == {Org("authority", "131041"), Org("office", "1301")}


def test_field_errors_name_field_and_rule_never_the_value() -> None:
    from pydantic import ValidationError

    sub = factories.referral(PK, authority="112039", site="112039-01")
    with pytest.raises(ValidationError) as info:
        to_event(sub, bytes(32))
    errors = from_validation_error(info.value)
    authority = next(e for e in errors if e.field == "authority")
    assert authority.message == "authority: check digit (sixth digit) does not match the first five"
    assert authority.operator_rule == "authority: check digit"
    assert "value" not in authority.for_client() and "112039" not in str(authority.for_client())
    echoing = FieldError("personal.name", "'山田 太郎' is too long", "山田 太郎", "string_too_long")
    assert "山田" not in str(echoing.for_client()), "a rule that repeats its value is not shown"
    personal = FieldError("personal.name", "too long", "山田 太郎", "string_too_long")
    assert "山田" not in personal.operator_rule and personal.operator_rule == "personal.name: string_too_long"
    unknown = FieldError("名前", "unknown field", None, "extra_forbidden")
    assert unknown.operator_rule == "(unknown field): extra_forbidden", (
        "client-chosen names never reach operators as typed"
    )


def test_credential_cache_keeps_verified_credentials_briefly() -> None:
    from producers.adapters.app import CredentialCache

    cache = CredentialCache()
    assert cache.get(None) is None and cache.get("Bearer ith_c1.secret") is None
    cache.put("Bearer ith_c1.secret", OFFICE)
    assert cache.get("Bearer ith_c1.secret") is OFFICE
    assert cache.get("Bearer ith_c1.wrong") is None  # keyed by the whole credential, secret included
    expired = CredentialCache(ttl_s=0)
    expired.put("Bearer ith_c1.secret", OFFICE)
    assert expired.get("Bearer ith_c1.secret") is None


def test_credential_cache_stays_bounded() -> None:
    from producers.adapters.app import CredentialCache

    cache = CredentialCache()
    for i in range(CredentialCache.MAX_ENTRIES + 5):
        cache.put(f"Bearer ith_c{i}.secret", OFFICE)
    assert len(cache._entries) <= CredentialCache.MAX_ENTRIES
    assert cache.get(f"Bearer ith_c{CredentialCache.MAX_ENTRIES + 4}.secret") is OFFICE


def test_requests_committed_together_are_authorised_each_on_its_own() -> None:
    """The group commit loads the registers once for all its requests; each is judged on its own copy,
    so a request refused as a whole (here: a batch whose second consent is another side's) lends the
    others nothing it would have recorded — neither its withdrawal's fence (P7) nor a holder."""
    from datetime import UTC, datetime

    from infra.config import get_settings
    from producers.adapters.csv_chunks import FamilyRows, Row
    from producers.adapters.service import AdapterService, _Unit

    def checked(body: dict[str, Any]) -> Row:
        result = FamilyRows(Family.CONSENT).judge_body(body)
        assert isinstance(result, Row), result
        return result

    withdrawal = data(Family.CONSENT, action="withdrawn", scopes=[], recipients=[])
    withdrawal["captured"] = {**withdrawal["captured"], "signed_at": "2025-04-10T10:00:00+09:00"}
    elsewhere = data(Family.CONSENT)
    elsewhere["captured"] = {**elsewhere["captured"], "side": "authority", "channel": "authority_counter"}
    earlier = data(Family.CONSENT, version=2)  # signed 2025-04-03: behind the refused withdrawal
    service = AdapterService(Adapter.EMPLOYMENT, get_settings(), None, None)  # type: ignore[arg-type]
    loaded = Context(sites=REGISTRY, holders={k: dict(v) for k, v in HELD.items()}, now=datetime.now(UTC))

    async def units() -> tuple[_Unit, _Unit]:  # a unit's future needs a running loop
        refused = _Unit(OFFICE, Family.CONSENT, [checked(withdrawal), checked(elsewhere)], None)
        return refused, _Unit(OFFICE, Family.CONSENT, [checked(earlier)], None)

    import asyncio

    refused, later = asyncio.run(units())
    verdict = service.authorise_unit(refused, loaded)
    assert (
        isinstance(verdict, AuthError)
        and "side 'authority' goes through the welfare adapter" in verdict.reason
    )
    assert service.authorise_unit(later, loaded) == ["/hellowork/offices/1301"]
    assert loaded.fences == {} and loaded.holders == HELD  # the loaded registers are left as loaded


def test_concurrent_requests_share_one_credential_lookup() -> None:
    """Before: when the cached entry expired, each of the concurrent requests looked the client up (32
    lookups at once at concurrency 32). Now one does and the others wait for its answer, a refusal too."""
    import asyncio

    from producers.adapters.app import CredentialCache

    lookups = 0

    async def lookup() -> Principal:
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.01)
        return OFFICE

    async def refused() -> Principal:
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.01)
        raise AuthError(401, "unknown client or wrong secret")

    async def run() -> None:
        cache = CredentialCache()
        header = "Bearer ith_c1.secret"
        got = await asyncio.gather(*(cache.verified(header, lookup) for _ in range(32)))
        assert got == [OFFICE] * 32 and lookups == 1
        assert await cache.verified(header, lookup) is OFFICE and lookups == 1  # cached now
        outcomes = await asyncio.gather(
            *(cache.verified("Bearer ith_c2.wrong", refused) for _ in range(8)), return_exceptions=True
        )
        assert lookups == 2 and all(isinstance(o, AuthError) and o.status == 401 for o in outcomes)
        assert cache.get("Bearer ith_c2.wrong") is None  # a refusal is never cached

    asyncio.run(run())
