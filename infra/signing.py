"""Erasures are signed by the hub's operator side and verified by every service that acts on one.

An erasure (``ittai.erasure.v1``) makes every consumer drop a person. ``ce_source`` says it comes from the
operator side, but a header proves nothing: anyone with WRITE on the erasure topic (the adapters' Kafka
user, whose in-process relays publish every outbox row) could write one. So the operator side signs each
erasure with an Ed25519 key only it holds (``HUB_ERASURE_SIGNING_KEY``: ``hub erase`` and the shared-view
API, which serves ``DELETE /persons``), and the consumers and key-holding services verify it with the
public key (``HUB_ERASURE_VERIFY_KEY``). A Kafka credential, or a whole adapter host, cannot forge one. What
is signed names the deployment too (environment and topic namespace, ``Deployment``), so an erasure
signed for staging does not verify in production, even were the two to share a key.

A local development stack uses a public demo key pair when none is set; anywhere else an unset key, or
the demo one, refuses to start (``InsecureConfiguration``). ``cryptography``'s Ed25519 (OpenSSL).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.envelope import Event
from contracts.events import erasure_statement
from infra.config import InsecureConfiguration, Settings

# The demo's erasure key pair: public, so never a production key (like the demo master key).
DEMO_ERASURE_SIGNING_KEY = base64.b64encode(b"demo-only-erasure-signing-key!!!").decode()


def _seed(encoded: str) -> Ed25519PrivateKey:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("HUB_ERASURE_SIGNING_KEY must be base64") from None
    if len(raw) != 32:
        raise ValueError(f"HUB_ERASURE_SIGNING_KEY must decode to 32 bytes, got {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_text(private: Ed25519PrivateKey) -> str:
    return base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


DEMO_ERASURE_VERIFY_KEY = public_key_text(_seed(DEMO_ERASURE_SIGNING_KEY))


def new_signing_key() -> str:
    """A new operator erasure key (``HUB_ERASURE_SIGNING_KEY``): 32 random bytes, base64."""
    return base64.b64encode(os.urandom(32)).decode()


def verify_key_of(signing_key: str) -> str:
    """``HUB_ERASURE_VERIFY_KEY`` for a ``HUB_ERASURE_SIGNING_KEY``."""
    return public_key_text(_seed(signing_key))


@dataclass(frozen=True, slots=True)
class Deployment:
    """Which hub an erasure is for, named in what its signature covers: the environment and the topic
    namespace. Were two deployments to share a key (they must not), an erasure signed for one, copied into
    the other's topic, would not verify there."""

    environment: str
    namespace: str

    @classmethod
    def of(cls, settings: Settings) -> Deployment:
        # A local development stack is one environment however a process on it was started (``./dev``
        # sets HUB_ENVIRONMENT=local, a shell after ``hub stack up`` may not), so that ``hub erase`` from a
        # shell and the consumers ``./dev demo`` started agree; it signs with the public demo key anyway.
        environment = "local" if settings.is_local_development() else settings.environment
        return cls(environment, settings.topic_namespace)


def _statement(
    deployment: Deployment,
    *,
    event_id: str,
    subject: str,
    source: str,
    person_key: str,
    erasure_id: str,
    erased_at: datetime,
) -> bytes:
    return erasure_statement(
        environment=deployment.environment,
        namespace=deployment.namespace,
        event_id=event_id,
        subject=subject,
        source=source,
        person_key=person_key,
        erasure_id=erasure_id,
        erased_at=erased_at,
    )


class ErasureSigner:
    """The operator side's signing key, for one deployment."""

    def __init__(self, private: Ed25519PrivateKey, deployment: Deployment) -> None:
        self._private = private
        self.deployment = deployment

    def sign(
        self,
        *,
        event_id: str,
        subject: str,
        source: str,
        person_key: str,
        erasure_id: str,
        erased_at: datetime,
    ) -> str:
        """The signature over the erasure's statement for this deployment
        (``contracts.events.erasure_statement``), base64url."""
        statement = _statement(
            self.deployment,
            event_id=event_id,
            subject=subject,
            source=source,
            person_key=person_key,
            erasure_id=erasure_id,
            erased_at=erased_at,
        )
        return base64.urlsafe_b64encode(self._private.sign(statement)).rstrip(b"=").decode()


class ErasureVerifier:
    """The operator's public key, for consumers and services acting on erasures in one deployment."""

    def __init__(self, public: Ed25519PublicKey, deployment: Deployment) -> None:
        self._public = public
        self.deployment = deployment

    def verify(self, event: Event) -> bool:
        """Whether the erasure ``event`` carries the operator's signature over exactly its statement, made
        for this deployment."""
        try:
            signature = base64.urlsafe_b64decode(event.data.signature + "==")
            data = event.data
            statement = _statement(
                self.deployment,
                event_id=event.id,
                subject=event.subject,
                source=event.source,
                person_key=data.person_key,
                erasure_id=data.erasure_id,
                erased_at=data.erased_at,
            )
            self._public.verify(signature, statement)
        except (InvalidSignature, ValueError, AttributeError, TypeError):
            return False
        return True


def erasure_signer(settings: Settings) -> ErasureSigner:
    """The signing key: ``HUB_ERASURE_SIGNING_KEY``, or the demo key on a local development stack."""
    encoded = settings.erasure_signing_key.get_secret_value() if settings.erasure_signing_key else None
    if encoded is None or encoded == DEMO_ERASURE_SIGNING_KEY:
        _only_locally(
            settings,
            "HUB_ERASURE_SIGNING_KEY is unset (or the demo key): only the operator side "
            "(hub erase, the shared-view API) holds it; set it to 32 random bytes, base64",
        )
        encoded = DEMO_ERASURE_SIGNING_KEY
    return ErasureSigner(_seed(encoded), Deployment.of(settings))


def erasure_signer_if_held(settings: Settings) -> ErasureSigner | None:
    """For a service that may erase but need not (the shared-view API's ``DELETE /persons``): the signer
    where this process holds the key (or on a local stack), else None, and the service refuses erasures."""
    try:
        return erasure_signer(settings)
    except InsecureConfiguration:
        return None


def erasure_verifier(settings: Settings) -> ErasureVerifier:
    """The operator's public key: ``HUB_ERASURE_VERIFY_KEY``; else the one of ``HUB_ERASURE_SIGNING_KEY``
    where this process holds it; else the demo key on a local development stack."""
    if settings.erasure_verify_key:
        encoded = settings.erasure_verify_key
    elif settings.erasure_signing_key:
        encoded = verify_key_of(settings.erasure_signing_key.get_secret_value())
    else:
        encoded = DEMO_ERASURE_VERIFY_KEY
    if encoded == DEMO_ERASURE_VERIFY_KEY:
        _only_locally(
            settings,
            "HUB_ERASURE_VERIFY_KEY is unset (or the demo key): set it to the public key "
            "of the operator side's HUB_ERASURE_SIGNING_KEY (hub erasure-key prints it)",
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
        return ErasureVerifier(Ed25519PublicKey.from_public_bytes(raw), Deployment.of(settings))
    except (binascii.Error, ValueError):
        raise ValueError("HUB_ERASURE_VERIFY_KEY must be 32 bytes, base64") from None


def _only_locally(settings: Settings, problem: str) -> None:
    if not settings.is_local_development():
        raise InsecureConfiguration(
            f"refusing to start with a public erasure key: {problem}. On a local development stack set "
            "HUB_ENVIRONMENT=local (hub stack up, ./dev demo and ./dev test do)."
        )
