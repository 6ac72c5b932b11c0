"""The erasure follower outlives a record it cannot read, whatever the error (its task has no supervisor:
a follower that stopped would leave every later erased person's key in the process's memory)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from contracts.envelope import encode
from infra import erasure_follower
from infra.config import Settings
from infra.signing import Deployment, ErasureSigner, erasure_signer, new_signing_key, verify_entry_of
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


def test_the_follower_takes_every_listed_key_and_no_retired_one() -> None:
    """Rotation reaches the followers too: an erasure by an older key still listed makes the process
    forget; once that key is removed from HUB_ERASURE_VERIFY_KEYS, its erasures are ignored here."""
    old, new = new_signing_key(), new_signing_key()
    listed = Settings(
        environment="local", erasure_verify_keys=f"{verify_entry_of(old)},{verify_entry_of(new)}"
    )
    retired = listed.model_copy(update={"erasure_verify_keys": verify_entry_of(new)})
    by_old = encode(
        to_event(
            factories.erasure(
                factories.person_key(),
                signer=erasure_signer(listed.model_copy(update={"erasure_signing_key": SecretStr(old)})),
            ),
            None,
        )
    )
    rotating, after = erasure_follower.ErasureFollower(listed), erasure_follower.ErasureFollower(retired)
    rotating._apply(*by_old)
    after._apply(*by_old)
    assert (rotating.forgotten, after.forgotten) == (1, 0)
