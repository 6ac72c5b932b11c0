"""No silent demo secrets (issue 10): the public defaults run only on a declared local development stack."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from infra.config import DEMO_MASTER_KEY, LOCAL_STACK_MARKER, InsecureConfiguration, Settings
from infra.crypto import KeyStore
from tests.helpers import respelled


def production(tmp_path: Path, **over: object) -> Settings:
    return Settings(environment="production", stack_dir=tmp_path, **over)  # type: ignore[arg-type]


def test_a_service_refuses_the_demo_key_and_default_password_outside_a_local_stack(tmp_path: Path) -> None:
    settings = production(tmp_path)
    with pytest.raises(InsecureConfiguration) as info:
        KeyStore.from_settings(settings)
    message = str(info.value)
    assert "HUB_MASTER_KEY" in message and "HUB_PG_PASSWORD" in message and "HUB_ENVIRONMENT=local" in message
    assert settings.master_key not in message and settings.pg_password not in message.split(":", 1)[1]
    only_key = production(tmp_path, master_key=base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(InsecureConfiguration, match="HUB_PG_PASSWORD") as info:
        only_key.require_secrets()
    assert "HUB_MASTER_KEY" not in str(info.value)


def test_real_secrets_or_a_declared_local_stack_start(tmp_path: Path) -> None:
    secure = production(tmp_path, master_key=base64.b64encode(os.urandom(32)).decode(), pg_password="s3cret")
    KeyStore.from_settings(secure)
    Settings(environment="local", stack_dir=tmp_path).require_secrets()
    (tmp_path / LOCAL_STACK_MARKER).write_text("hub stack up\n")
    production(tmp_path).require_secrets()  # `hub stack up` declared this machine a development stack


def test_the_demo_key_in_another_spelling_is_still_the_demo_key(tmp_path: Path) -> None:
    """The check compares the key, not its text: base64 has more than one spelling of the same 32 bytes
    (the last character's unused bits; characters outside the alphabet, which the decoder skips)."""
    for spelling in (respelled(DEMO_MASTER_KEY), DEMO_MASTER_KEY[:8] + "\n" + DEMO_MASTER_KEY[8:]):
        settings = production(tmp_path, master_key=spelling, pg_password="s3cret")
        with pytest.raises(InsecureConfiguration, match="HUB_MASTER_KEY") as info:
            KeyStore.from_settings(settings)
        assert spelling not in str(info.value)
