"""The operator's erasure key: the demo pair only on a local development stack; a verifier takes exactly
the signatures of the configured key over exactly the erasure they were made for."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from typer.testing import CliRunner

from contracts.envelope import Event
from hub.cli import app
from infra.config import InsecureConfiguration, Settings
from infra.signing import (
    DEMO_ERASURE_SIGNING_KEY,
    DEMO_ERASURE_VERIFY_KEY,
    Deployment,
    ErasureSigner,
    erasure_signer,
    erasure_signer_if_held,
    erasure_verifier,
    new_signing_key,
    verify_key_of,
)
from producers.submission import to_event
from tests import factories


def _production(tmp_path: Path, **keys: object) -> Settings:
    return Settings(environment="production", stack_dir=tmp_path, **keys)  # type: ignore[arg-type]


def _erasure(signing_key: str, tmp_path: Path) -> Event:
    """An erasure signed with ``signing_key`` for the production deployment ``_production`` makes."""
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(signing_key))
    signer = ErasureSigner(private, Deployment.of(_production(tmp_path)))
    return to_event(factories.erasure(factories.person_key(), signer=signer), None)


def test_outside_a_local_stack_the_demo_pair_or_none_refuses_to_start(tmp_path: Path) -> None:
    for keys in ({}, {"erasure_signing_key": SecretStr(DEMO_ERASURE_SIGNING_KEY)}):
        with pytest.raises(InsecureConfiguration, match="HUB_ERASURE_SIGNING_KEY"):
            erasure_signer(_production(tmp_path, **keys))
        assert erasure_signer_if_held(_production(tmp_path, **keys)) is None
    for keys in ({}, {"erasure_verify_key": DEMO_ERASURE_VERIFY_KEY}):
        with pytest.raises(InsecureConfiguration, match="HUB_ERASURE_VERIFY_KEY"):
            erasure_verifier(_production(tmp_path, **keys))


def test_a_verifier_takes_only_its_keys_signatures(tmp_path: Path) -> None:
    operator = new_signing_key()
    verifier = erasure_verifier(_production(tmp_path, erasure_verify_key=verify_key_of(operator)))
    assert erasure_signer(_production(tmp_path, erasure_signing_key=SecretStr(operator))) is not None

    assert verifier.verify(_erasure(operator, tmp_path))
    assert not verifier.verify(_erasure(DEMO_ERASURE_SIGNING_KEY, tmp_path))
    assert not verifier.verify(_erasure(new_signing_key(), tmp_path))


def test_a_signature_covers_whom_and_when(tmp_path: Path) -> None:
    operator = new_signing_key()
    verifier = erasure_verifier(_production(tmp_path, erasure_verify_key=verify_key_of(operator)))
    genuine = _erasure(operator, tmp_path)
    other = factories.person_key()
    data = genuine.data
    for changed in (
        genuine._replace(subject=other),
        genuine._replace(id="0" * 32),
        genuine._replace(source="/authorities/131041"),
        genuine._replace(data=data.model_copy(update={"person_key": other})),
        genuine._replace(data=data.model_copy(update={"erasure_id": "1" * 32})),
        genuine._replace(data=data.model_copy(update={"erased_at": data.erased_at.replace(year=2020)})),
    ):
        assert not verifier.verify(changed)
    assert verifier.verify(genuine)


def test_hub_erasure_key_makes_a_pair_and_prints_the_public_half(monkeypatch: pytest.MonkeyPatch) -> None:
    made = CliRunner().invoke(app, ["erasure-key", "--new"])
    assert made.exit_code == 0, made.output
    pair = dict(line.split("=", 1) for line in made.output.split())
    assert pair["HUB_ERASURE_VERIFY_KEY"] == verify_key_of(pair["HUB_ERASURE_SIGNING_KEY"])
    monkeypatch.setattr(
        "infra.config.get_settings",
        lambda: Settings(environment="local", erasure_signing_key=SecretStr(pair["HUB_ERASURE_SIGNING_KEY"])),
    )
    shown = CliRunner().invoke(app, ["erasure-key"])
    assert shown.output.split() == [f"HUB_ERASURE_VERIFY_KEY={pair['HUB_ERASURE_VERIFY_KEY']}"]


def test_a_signature_made_for_another_environment_or_namespace_does_not_verify(tmp_path: Path) -> None:
    """Staging and production sharing a key (they must not, but): staging's erasure, copied into
    production's topic, does not verify there; nor one signed for another topic namespace."""
    operator = SecretStr(new_signing_key())
    production = _production(tmp_path, erasure_signing_key=operator)
    staging = production.model_copy(update={"environment": "staging"})
    other_namespace = production.model_copy(update={"topic_namespace": "ittai2"})
    verifier = erasure_verifier(production)

    def signed_for(deployment: Settings) -> Event:
        return to_event(factories.erasure(factories.person_key(), signer=erasure_signer(deployment)), None)

    assert verifier.verify(signed_for(production))
    assert not verifier.verify(signed_for(staging))
    assert not verifier.verify(signed_for(other_namespace))
