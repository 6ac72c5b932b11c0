"""No silent demo secrets (issue 10): the public defaults run only on a declared local development stack."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from infra.config import LOCAL_STACK_MARKER, InsecureConfiguration, Settings
from infra.crypto import KeyStore


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
