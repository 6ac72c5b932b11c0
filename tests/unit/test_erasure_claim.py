"""One erasure claim, signed by the operator side and verified by every service acting on it: a signature
vouches for exactly the claim it was made over, and its bytes are those every deployed verifier checks."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.events import ErasureClaim
from infra.signing import KEY_NOT_LISTED, NOT_SIGNED_HERE, Deployment, ErasureSigner, ErasureVerifier

PERSON = "0123456789abcdef" * 2
CLAIM = ErasureClaim(
    event_id="a" * 32,
    subject=PERSON,
    source="/hub/operator",
    person_key=PERSON,
    erasure_id="a" * 32,
    erased_at=datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=UTC),
)
PRODUCTION = Deployment("production", "ittai")
# A fixed key (not a secret: made for this test) and the signature it made over CLAIM before the claim was
# one value: erasures already on the topics must verify after the change, so the bytes signed never move.
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNED_BEFORE = "Dzs0TacrupBYlwKegUZPHtGSvNCSoVdzwnaLcn9ptqEWRYL75Sou1YTsZpZsp80TO_l42mSjq1hPGhGA0n2VAw"


def _verifier(key: Ed25519PrivateKey, deployment: Deployment = PRODUCTION) -> ErasureVerifier:
    signer = ErasureSigner(key, deployment)
    return ErasureVerifier({signer.key_id: key.public_key()}, deployment)


def test_a_claim_signs_to_the_same_bytes_as_before() -> None:
    signer = ErasureSigner(KEY, PRODUCTION)
    assert signer.sign(CLAIM) == SIGNED_BEFORE
    assert _verifier(KEY).claim_refusal(CLAIM, signer.key_id, SIGNED_BEFORE) is None


def test_a_signed_claim_round_trips() -> None:
    key = Ed25519PrivateKey.generate()
    signer = ErasureSigner(key, PRODUCTION)
    assert _verifier(key).claim_refusal(CLAIM, signer.key_id, signer.sign(CLAIM)) is None


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("event_id", "b" * 32),
        ("subject", "f" * 32),
        ("source", "/authorities/131041"),
        ("person_key", "f" * 32),
        ("erasure_id", "b" * 32),
        ("erased_at", CLAIM.erased_at + timedelta(microseconds=1)),
    ],
)
def test_changing_any_one_field_of_a_claim_breaks_its_signature(field: str, other: object) -> None:
    signer = ErasureSigner(KEY, PRODUCTION)
    changed = dataclasses.replace(CLAIM, **{field: other})
    assert _verifier(KEY).claim_refusal(changed, signer.key_id, signer.sign(CLAIM)) == NOT_SIGNED_HERE


def test_every_field_of_a_claim_is_covered() -> None:
    """The parametrised cases above change each field the claim has: a field added later must join them."""
    assert [f.name for f in dataclasses.fields(ErasureClaim)] == [
        "event_id",
        "subject",
        "source",
        "person_key",
        "erasure_id",
        "erased_at",
    ]


def test_a_claim_signed_elsewhere_or_by_an_unlisted_key_is_refused() -> None:
    signer = ErasureSigner(KEY, Deployment("staging", "ittai"))
    assert _verifier(KEY).claim_refusal(CLAIM, signer.key_id, signer.sign(CLAIM)) == NOT_SIGNED_HERE
    stranger = ErasureSigner(Ed25519PrivateKey.generate(), PRODUCTION)
    assert _verifier(KEY).claim_refusal(CLAIM, stranger.key_id, stranger.sign(CLAIM)) == KEY_NOT_LISTED
