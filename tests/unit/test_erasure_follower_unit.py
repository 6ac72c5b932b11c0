"""The erasure follower outlives a record it cannot read, whatever the error (its task has no supervisor:
a follower that stopped would leave every later erased person's key in the process's memory)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.envelope import encode
from infra import erasure_follower
from infra.config import Settings
from infra.signing import Deployment, ErasureSigner
from producers.submission import to_event
from tests import factories


def test_an_unforeseen_error_on_one_record_skips_that_record_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object) -> None:
        raise RuntimeError("a decoder bug")

    monkeypatch.setattr(erasure_follower, "decode", boom)
    follower = erasure_follower.ErasureFollower(Settings())
    follower._apply(b"k", [], b"{}")
    assert follower.unreadable == 1 and follower.forgotten == 0


def test_only_an_erasure_signed_by_the_operator_key_makes_the_process_forget() -> None:
    """The follower checks the operator's signature as the consumers do: a forged erasure under the
    operator's ``ce_source`` (a leaked Kafka password) does not empty this process's key caches."""
    settings = Settings(environment="local")
    follower = erasure_follower.ErasureFollower(settings)
    rogue = ErasureSigner(Ed25519PrivateKey.generate(), Deployment.of(settings))
    pk = factories.person_key()
    follower._apply(*encode(to_event(factories.erasure(pk, signer=rogue), None)))
    assert follower.forgotten == 0
    follower._apply(*encode(to_event(factories.erasure(pk), None)))
    assert follower.forgotten == 1
