"""The operator's erasure keys: the demo pair only on a local development stack; a verifier takes exactly
the signatures of its listed keys over exactly the erasure they were made for, in the deployment they
were made for; keys rotate by id."""

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
    DEMO_ERASURE_VERIFY_KEYS,
    KEY_NOT_LISTED,
    NOT_SIGNED_HERE,
    Deployment,
    ErasureSigner,
    erasure_signer,
    erasure_signer_if_held,
    erasure_verifier,
    key_id_of,
    new_signing_key,
    parse_verify_keys,
    verify_entry_of,
)
from producers.submission import to_event
from tests import factories
from tests.helpers import respelled


def _production(tmp_path: Path, **keys: object) -> Settings:
    return Settings(environment="production", stack_dir=tmp_path, **keys)  # type: ignore[arg-type]


def _erasure(signing_key: str, tmp_path: Path) -> Event:
    """An erasure signed with ``signing_key`` for the production deployment ``_production`` makes."""
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(signing_key))
    signer = ErasureSigner(private, Deployment.of(_production(tmp_path)))
    return to_event(factories.erasure(factories.person_key(), signer=signer), None)


def key_id_of_key(signing_key: str) -> str:
    return verify_entry_of(signing_key).split(":", 1)[0]


def test_outside_a_local_stack_the_demo_pair_or_none_refuses_to_start(tmp_path: Path) -> None:
    for keys in ({}, {"erasure_signing_key": SecretStr(DEMO_ERASURE_SIGNING_KEY)}):
        with pytest.raises(InsecureConfiguration, match="HUB_ERASURE_SIGNING_KEY"):
            erasure_signer(_production(tmp_path, **keys))
        assert erasure_signer_if_held(_production(tmp_path, **keys)) is None
    real = verify_entry_of(new_signing_key())
    for keys in (
        {},
        {"erasure_verify_keys": DEMO_ERASURE_VERIFY_KEYS},
        {"erasure_verify_keys": f"{real},{DEMO_ERASURE_VERIFY_KEYS}"},  # the demo beside a real key
    ):
        with pytest.raises(InsecureConfiguration, match="HUB_ERASURE_VERIFY_KEYS"):
            erasure_verifier(_production(tmp_path, **keys))


def test_the_demo_pair_in_another_spelling_is_still_refused(tmp_path: Path) -> None:
    """The check compares key bytes, not base64 text (the last character's unused bits)."""
    demo_seed = SecretStr(respelled(DEMO_ERASURE_SIGNING_KEY))
    with pytest.raises(InsecureConfiguration, match="HUB_ERASURE_SIGNING_KEY"):
        erasure_signer(_production(tmp_path, erasure_signing_key=demo_seed))
    assert erasure_signer_if_held(_production(tmp_path, erasure_signing_key=demo_seed)) is None
    key_id, public = DEMO_ERASURE_VERIFY_KEYS.split(":")
    for keys in (
        {"erasure_verify_keys": f"{key_id}:{respelled(public)}"},
        {"erasure_signing_key": demo_seed},
    ):
        with pytest.raises(InsecureConfiguration, match="HUB_ERASURE_VERIFY_KEYS"):
            erasure_verifier(_production(tmp_path, **keys))


def test_a_verifier_takes_only_its_keys_signatures(tmp_path: Path) -> None:
    operator = new_signing_key()
    verifier = erasure_verifier(_production(tmp_path, erasure_verify_keys=verify_entry_of(operator)))
    assert erasure_signer(_production(tmp_path, erasure_signing_key=SecretStr(operator))) is not None

    assert verifier.verify(_erasure(operator, tmp_path))
    assert verifier.refusal(_erasure(DEMO_ERASURE_SIGNING_KEY, tmp_path)) == KEY_NOT_LISTED
    assert verifier.refusal(_erasure(new_signing_key(), tmp_path)) == KEY_NOT_LISTED
    # Another key's signature under this key's id: the id selects the key, the signature still decides.
    forged = _erasure(new_signing_key(), tmp_path)
    forged = forged._replace(data=forged.data.model_copy(update={"key_id": key_id_of_key(operator)}))
    assert verifier.refusal(forged) == NOT_SIGNED_HERE


def test_a_signature_covers_whom_when_and_which_key(tmp_path: Path) -> None:
    operator, second = new_signing_key(), new_signing_key()
    both = f"{verify_entry_of(operator)},{verify_entry_of(second)}"
    verifier = erasure_verifier(_production(tmp_path, erasure_verify_keys=both))
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
        genuine._replace(data=data.model_copy(update={"key_id": key_id_of_key(second)})),
    ):
        assert verifier.refusal(changed) == NOT_SIGNED_HERE
    assert verifier.verify(genuine)


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
    assert verifier.refusal(signed_for(staging)) == NOT_SIGNED_HERE
    assert verifier.refusal(signed_for(other_namespace)) == NOT_SIGNED_HERE


def test_a_local_stack_is_one_environment_however_a_process_was_started(tmp_path: Path) -> None:
    """``hub erase`` from a shell after ``hub stack up`` (no HUB_ENVIRONMENT) and consumers that
    ``./dev`` started (HUB_ENVIRONMENT=local) sign and verify for the same deployment."""
    (tmp_path / "LOCAL-DEVELOPMENT-STACK").write_text("hub stack up\n")
    shell = Settings(environment="production", stack_dir=tmp_path)
    dev = Settings(environment="local", stack_dir=tmp_path)
    assert Deployment.of(shell) == Deployment.of(dev)
    assert erasure_verifier(dev).verify(
        to_event(factories.erasure(factories.person_key(), signer=erasure_signer(shell)), None)
    )


def test_verify_keys_rotate_by_id(tmp_path: Path) -> None:
    """Old and new keys listed: both keys' erasures verify; the old entry removed: its erasures are
    refused, naming the rule; the new one's still verify."""
    old, new = new_signing_key(), new_signing_key()
    by_old, by_new = _erasure(old, tmp_path), _erasure(new, tmp_path)
    listed = erasure_verifier(
        _production(tmp_path, erasure_verify_keys=f"{verify_entry_of(old)}, {verify_entry_of(new)}")
    )
    assert listed.verify(by_old) and listed.verify(by_new)
    assert listed.key_ids == {key_id_of_key(old), key_id_of_key(new)}
    retired = erasure_verifier(_production(tmp_path, erasure_verify_keys=verify_entry_of(new)))
    assert retired.refusal(by_old) == KEY_NOT_LISTED and retired.verify(by_new)


def test_the_verify_keys_setting_is_strict_and_never_echoed(tmp_path: Path) -> None:
    good = verify_entry_of(new_signing_key())
    key_id, public = good.split(":")
    wrong_id = verify_entry_of(new_signing_key()).split(":")[0]
    for text, rule in (
        (public, "must be key_id:public key"),
        (f"{key_id}:not-base64!", "must be key_id:public key"),
        (f"{key_id}:{base64.b64encode(b'short').decode()}", "must be key_id:public key"),
        (f"{wrong_id}:{public}", "the key id is not this public key's"),
        (" , ", "lists no key"),
    ):
        with pytest.raises(ValueError, match=rule) as info:
            parse_verify_keys(f"{good},{text}" if "lists no key" not in rule else text)
        assert public not in str(info.value) and wrong_id not in str(info.value)
    assert parse_verify_keys(f" {good} ,") == {key_id: base64.b64decode(public)}
    assert key_id == key_id_of(base64.b64decode(public))


def test_the_replaced_single_verify_key_setting_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="replaced by HUB_ERASURE_VERIFY_KEYS"):
        erasure_verifier(_production(tmp_path, erasure_verify_key="anything"))


def test_a_signing_key_not_among_the_listed_verify_keys_refuses_to_start(tmp_path: Path) -> None:
    """Where a process holds both, its own erasures would be dead-lettered everywhere: refused at start."""
    operator, other = new_signing_key(), new_signing_key()
    settings = _production(
        tmp_path, erasure_signing_key=SecretStr(operator), erasure_verify_keys=verify_entry_of(other)
    )
    with pytest.raises(ValueError, match="not among HUB_ERASURE_VERIFY_KEYS"):
        erasure_signer(settings)
    listed = settings.model_copy(
        update={"erasure_verify_keys": f"{verify_entry_of(other)},{verify_entry_of(operator)}"}
    )
    assert erasure_signer(listed).key_id == key_id_of_key(operator)


def test_hub_erasure_key_makes_a_pair_and_prints_its_entry_and_id(monkeypatch: pytest.MonkeyPatch) -> None:
    made = CliRunner().invoke(app, ["erasure-key", "--new"])
    assert made.exit_code == 0, made.output
    lines = dict(line.split("=", 1) for line in made.stdout.split())
    entry = lines["HUB_ERASURE_VERIFY_KEYS"]
    assert entry == verify_entry_of(lines["HUB_ERASURE_SIGNING_KEY"])
    assert f"key id {entry.split(':')[0]}" in made.stderr
    monkeypatch.setattr(
        "infra.config.get_settings",
        lambda: Settings(
            environment="local", erasure_signing_key=SecretStr(lines["HUB_ERASURE_SIGNING_KEY"])
        ),
    )
    shown = CliRunner().invoke(app, ["erasure-key"])
    assert shown.stdout.split() == [f"HUB_ERASURE_VERIFY_KEYS={entry}"]
    assert key_id_of(base64.b64decode(entry.split(":")[1])) == entry.split(":")[0]
