"""Who may publish what: an authority only about its own sites, a Hello Work office only about its own.

Pure rules over an authenticated ``Principal`` and a validated event; the sites registry lookup is
passed in as a mapping (site id -> office) so the rules are tested without a database. A refusal is an
``AuthError(403)`` whose reason names the rule and the codes involved (codes are not personal data).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from contracts.envelope import Family
from infra.auth import AuthError, OrgKind, Principal


class Adapter(StrEnum):
    WELFARE = "welfare"  # authority side (自治体)
    EMPLOYMENT = "employment"  # Hello Work side (ハローワーク)


FAMILIES: Mapping[Adapter, tuple[Family, ...]] = {
    Adapter.WELFARE: (Family.CONSENT, Family.REFERRAL, Family.RETENTION),
    Adapter.EMPLOYMENT: (Family.REGISTRATION, Family.CONSENT, Family.PLACEMENT, Family.RETENTION),
}
_ORG_KINDS: Mapping[Adapter, frozenset[OrgKind]] = {
    Adapter.WELFARE: frozenset({OrgKind.AUTHORITY}),
    Adapter.EMPLOYMENT: frozenset({OrgKind.OFFICE, OrgKind.HELLO_WORK_NATIONAL}),
}
# Where consent was signed decides which side's adapter may carry it.
_CONSENT_SIDE = {Adapter.WELFARE: "authority", Adapter.EMPLOYMENT: "hello_work"}


def check_client(adapter: Adapter, principal: Principal) -> None:
    """The client's organisation kind fits this adapter (authorities to welfare, Hello Work to employment)."""
    if principal.org_kind not in _ORG_KINDS[adapter]:
        kinds = " or ".join(sorted(k.value for k in _ORG_KINDS[adapter]))
        raise AuthError(
            403,
            f"the {adapter.value} adapter takes clients of {kinds}; client {principal.client_id} is "
            f"{principal.organisation}",
        )


def sites_to_resolve(family: Family, data: Mapping[str, Any]) -> str | None:
    """The site whose office must be looked up in the registry to authorise an office, if any."""
    if family is Family.CONSENT:
        return str(data["captured"]["site"])
    if family is Family.RETENTION:
        return str(data["site"])
    return None


def authorize(
    adapter: Adapter,
    principal: Principal,
    family: Family,
    data: Mapping[str, Any],
    site_offices: Mapping[str, str],
) -> str:
    """Raise AuthError(403) unless ``principal`` may publish this event; return the CloudEvents source."""
    check_client(adapter, principal)
    if adapter is Adapter.WELFARE:
        return _authorize_authority(principal, family, data)
    return _authorize_office(principal, family, data, site_offices)


def _deny(principal: Principal, what: str) -> AuthError:
    return AuthError(403, f"client {principal.client_id} ({principal.organisation}) may not publish {what}")


def _authorize_authority(principal: Principal, family: Family, data: Mapping[str, Any]) -> str:
    if family is Family.REFERRAL:
        if not principal.covers_authority(str(data["authority"])):
            raise _deny(principal, f"a referral by authority {data['authority']}")
    elif family is Family.CONSENT:
        captured = data["captured"]
        if captured["side"] != _CONSENT_SIDE[Adapter.WELFARE]:
            raise AuthError(
                403,
                f"consent captured on side {captured['side']!r} goes through the employment adapter; "
                "the welfare adapter carries consent signed at the authority",
            )
        if not principal.covers_authority(str(captured["site"])[:6]):
            raise _deny(principal, f"consent captured at site {captured['site']} (not its site)")
    elif not principal.covers_authority(str(data["site"])[:6]):
        raise _deny(principal, f"a {family.value} event at site {data['site']} (not its site)")
    return f"/authorities/{principal.org_code}"


def _authorize_office(
    principal: Principal, family: Family, data: Mapping[str, Any], site_offices: Mapping[str, str]
) -> str:
    if family in (Family.REGISTRATION, Family.PLACEMENT):
        office = str(data["office"])
    else:
        if family is Family.CONSENT and data["captured"]["side"] != _CONSENT_SIDE[Adapter.EMPLOYMENT]:
            raise AuthError(
                403,
                f"consent captured on side {data['captured']['side']!r} goes through the welfare adapter; "
                "the employment adapter carries consent signed at Hello Work or the joint reception",
            )
        site = sites_to_resolve(family, data)
        assert site is not None
        found = site_offices.get(site)
        if found is None:
            if principal.org_kind is OrgKind.HELLO_WORK_NATIONAL:
                return "/hellowork/national"
            raise AuthError(
                403,
                f"site {site} is not in the sites registry, so its office cannot be checked "
                "(an operator adds it with 'hub sites add')",
            )
        office = found
    if not principal.covers_office(office):
        raise _deny(principal, f"a {family.value} event for office {office} (not its office)")
    return f"/hellowork/offices/{office}"
