"""Valid submissions for each event family, for tests that need one of each. Each carries the source
that owns its data (the consumers re-check it, P2/P4), whatever codes a test overrides."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from contracts.envelope import Family
from contracts.events import ErasureClaim
from infra.config import get_settings
from infra.signing import ErasureSigner, erasure_signer
from producers.submission import Submission

AUTHORITY = "131041"  # Shinjuku
SITE = "131041-01"
OFFICE = "1301"
OTHER_AUTHORITY = "112038"  # Kawaguchi


def _capturer(captured: dict[str, Any]) -> str:
    """The source that may publish a consent: the capturing side's organisation (P4)."""
    if captured["side"] == "authority":
        return _authority(captured["site"][:6])
    return _office(OFFICE)


def _authority(code: Any) -> str:  # a test's malformed code keeps the default source
    return f"/authorities/{code if re.fullmatch('[0-9]{6}', str(code)) else AUTHORITY}"


def _office(code: Any) -> str:
    return f"/hellowork/offices/{code if re.fullmatch('[0-9]{4}', str(code)) else OFFICE}"


def person_key() -> str:
    return uuid.uuid4().hex


def registration(pk: str, **over: Any) -> Submission:
    data: dict[str, Any] = {
        "person_key": pk,
        "registered_on": "2025-04-03",
        "office": OFFICE,
        "site": SITE,
        "authority": AUTHORITY,
        "sex": "female",
        "age_band": "35-39",
        "attributes": ["public_assistance"],
        "desired_occupation": {"group": "06", "classification_version": "MHLW-2022"},
        "team_support": True,
        "personal": {
            "name": "髙橋 花子",
            "name_kana": "タカハシ ハナコ",
            "birth_date": "1988-06-01",
            "phone": "03-1234-5678",
            "job_seeker_number": "13010-12345678",
        },
    }
    data.update(over)
    return Submission(Family.REGISTRATION, _office(data["office"]), datetime.now(UTC), data)


def consent(
    pk: str, *, version: int = 1, action: str = "given", consent_id: str | None = None, **over: Any
) -> Submission:
    data: dict[str, Any] = {
        "consent_id": consent_id or uuid.uuid4().hex,
        "version": version,
        "action": action,
        "person_key": pk,
        "scopes": []
        if action == "withdrawn"
        else ["share_registration", "disclose_placement", "retention_support"],
        "recipients": [{"kind": "authority", "code": AUTHORITY}, {"kind": "office", "code": OFFICE}],
        "valid_from": "2025-04-03",
        "form_version": "common-form-2016.1",
        "captured": {
            "side": "hello_work",
            "site": SITE,
            "channel": "paper_form",
            "signed_at": "2025-04-03T10:00:00+09:00",
        },
    }
    data.update(over)
    return Submission(Family.CONSENT, _capturer(data["captured"]), datetime.now(UTC), data)


def referral(pk: str, **over: Any) -> Submission:
    data: dict[str, Any] = {
        "referral_id": uuid.uuid4().hex,
        "person_key": pk,
        "authority": AUTHORITY,
        "site": SITE,
        "programme": "public_assistance_employment",
        "referred_on": "2025-04-01",
        "personal": {"case_number": "SJ-2025-0042"},
    }
    data.update(over)
    return Submission(Family.REFERRAL, _authority(data["authority"]), datetime.now(UTC), data)


def placement(pk: str, *, placement_id: str | None = None, **over: Any) -> Submission:
    data: dict[str, Any] = {
        "placement_id": placement_id or uuid.uuid4().hex,
        "person_key": pk,
        "office": OFFICE,
        "site": SITE,
        "placed_on": "2025-05-12",
        "route": "hello_work_referral",
        "occupation": {"group": "08", "classification_version": "MHLW-2022"},
        "employment_type": "part_time",
        "sex": "female",
        "age_band": "35-39",
        "attributes": ["public_assistance"],
        "personal": {"employer_name": "株式会社𠮷野ケアサービス"},
    }
    data.update(over)
    return Submission(Family.PLACEMENT, _office(data["office"]), datetime.now(UTC), data)


def retention(pk: str, placement_id: str, **over: Any) -> Submission:
    data: dict[str, Any] = {
        "person_key": pk,
        "placement_id": placement_id,
        "checkpoint_months": 1,
        "status": "employed",
        "checked_on": "2025-06-12",
        "site": SITE,
    }
    data.update(over)
    return Submission(Family.RETENTION, _authority(data["site"][:6]), datetime.now(UTC), data)


def erasure(pk: str, *, source: str = "/hub/operator", signer: ErasureSigner | None = None) -> Submission:
    """An ``ittai.erasure.v1`` as the hub's operator side publishes it (``erase_person``), signed with the
    local stack's operator key; another ``source`` or ``signer`` makes a forged one."""
    now = datetime.now(UTC)
    erasure_id = uuid.uuid4().hex
    signer = signer or erasure_signer(get_settings())
    claim = ErasureClaim(
        event_id=erasure_id, subject=pk, source=source, person_key=pk, erasure_id=erasure_id, erased_at=now
    )
    signature = signer.sign(claim)
    data = {"person_key": pk, "erasure_id": erasure_id, "erased_at": now.isoformat(),
            "key_id": signer.key_id, "signature": signature}  # fmt: skip
    return Submission(Family.ERASURE, source, now, data, event_id=erasure_id)


def one_of_each(pk: str) -> list[Submission]:
    pid = uuid.uuid4().hex
    return [
        referral(pk),
        registration(pk),
        consent(pk),
        placement(pk, placement_id=pid),
        retention(pk, pid),
    ]
