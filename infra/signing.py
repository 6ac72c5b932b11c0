"""Erasures are signed by the hub's operator side and verified by every service that acts on one.

An erasure (``ittai.erasure.v1``) makes every consumer drop a person. ``ce_source`` says it comes from the
operator side, but a header proves nothing: anyone with WRITE on the erasure topic (the adapters' Kafka
user, whose in-process relays publish every outbox row) could write one. So the operator side signs each
erasure with an Ed25519 key only it holds (``HUB_ERASURE_SIGNING_KEY``: ``hub erase`` and the shared-view
API, which serves ``DELETE /persons``), and the consumers and key-holding services verify it with the
public keys (``HUB_ERASURE_VERIFY_KEYS``). A Kafka credential, or a whole adapter host, cannot forge one.
What is signed names the deployment too (environment and topic namespace, ``Deployment``), so an erasure
signed for staging does not verify in production, even were the two to share a key.

**Rotation.** Each key has an id, derived from its public key (``key_id_of``), which every erasure carries
(``key_id``) and its signature covers. A verifier holds a set of public keys by id: the new key's entry is
added everywhere before the operator side signs with it, and an older erasure (a replay reads them all)
verifies for as long as its key is listed. Removing an entry retires the key: its erasures are
dead-lettered from then on, naming the rule, while their effect stands where it lives — the deleted data
key and the erasure register in PostgreSQL, which acceptance, the view and every replay read.

A local development stack uses a public demo key pair when none is set; anywhere else an unset key, or
the demo one, refuses to start (``InsecureConfiguration``). ``cryptography``'s Ed25519 (OpenSSL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.envelope import Event
from contracts.events import ErasureClaim
from infra.config import InsecureConfiguration, Settings

# Why an erasure is refused (its dead letter): the rule, never a value.
NOT_SIGNED_HERE = (
    "P9: signature: an erasure is signed by the hub's operator erasure key over the deployment it is for "
    "(environment, topic namespace), the key id, its id, subject, source, person key, erasure id and "
    "time; this one's signature does not verify here"
)
KEY_NOT_LISTED = (
    "P9: signature: key_id: not one of this hub's erasure verify keys (HUB_ERASURE_VERIFY_KEYS): signed "
    "by a retired key, or by none of the operator's"
)

# The demo's erasure key pair: public, so never a production key (like the demo master key).
DEMO_ERASURE_SIGNING_KEY = base64.b64encode(b"demo-only-erasure-signing-key!!!").decode()


def _seed_bytes(encoded: str) -> bytes:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("HUB_ERASURE_SIGNING_KEY must be base64") from None
    if len(raw) != 32:
        raise ValueError(f"HUB_ERASURE_SIGNING_KEY must decode to 32 bytes, got {len(raw)}")
    return raw


def _public_bytes(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_of(public: bytes) -> str:
    """A key's id: the first 8 bytes of the SHA-256 of its raw public key, hex. Derived, so it cannot be
    set wrong, and the signer needs no setting beside its key."""
    return hashlib.sha256(public).hexdigest()[:16]


def _entry(public: bytes) -> str:
    return f"{key_id_of(public)}:{base64.b64encode(public).decode()}"


# The demo pair is recognised by its key bytes, never by its text: base64 spells the same 32 bytes in
# more than one way (the last character's unused bits), and each spelling is the same key.
_DEMO_SEED = _seed_bytes(DEMO_ERASURE_SIGNING_KEY)
_DEMO_PUBLIC = _public_bytes(Ed25519PrivateKey.from_private_bytes(_DEMO_SEED))
DEMO_ERASURE_VERIFY_KEYS = _entry(_DEMO_PUBLIC)


def new_signing_key() -> str:
    """A new operator erasure key (``HUB_ERASURE_SIGNING_KEY``): 32 random bytes, base64."""
    return base64.b64encode(os.urandom(32)).decode()


def verify_entry_of(signing_key: str) -> str:
    """The ``HUB_ERASURE_VERIFY_KEYS`` entry (``key_id:public key``) of a ``HUB_ERASURE_SIGNING_KEY``."""
    return _entry(_public_bytes(Ed25519PrivateKey.from_private_bytes(_seed_bytes(signing_key))))


def parse_verify_keys(text: str) -> dict[str, bytes]:
    """``HUB_ERASURE_VERIFY_KEYS``: ``key_id:public key`` entries separated by commas, each public key 32
    bytes base64 and its id the one ``key_id_of`` gives (an id that does not match is a copying mistake:
    refused, not trusted). Errors name the entry by position."""
    keys: dict[str, bytes] = {}
    for n, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        key_id, colon, encoded = entry.partition(":")
        try:
            if not colon:
                raise ValueError
            raw = base64.b64decode(encoded, validate=True)
            Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"HUB_ERASURE_VERIFY_KEYS entry {n}: must be key_id:public key (32 bytes, base64), as "
                "hub erasure-key prints it"
            ) from None
        if key_id != key_id_of(raw):
            raise ValueError(
                f"HUB_ERASURE_VERIFY_KEYS entry {n}: the key id is not this public key's "
                "(hub erasure-key prints the entry)"
            )
        keys[key_id] = raw
    if not keys:
        raise ValueError("HUB_ERASURE_VERIFY_KEYS lists no key")
    return keys


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


def _statement(deployment: Deployment, key_id: str, claim: ErasureClaim) -> bytes:
    return claim.statement(environment=deployment.environment, namespace=deployment.namespace, key_id=key_id)


def claim_of(event: Event) -> ErasureClaim:
    """The claim an erasure event makes (``AttributeError`` where its data is not an erasure's)."""
    data = event.data
    return ErasureClaim(
        event_id=event.id,
        subject=event.subject,
        source=event.source,
        person_key=data.person_key,
        erasure_id=data.erasure_id,
        erased_at=data.erased_at,
    )


class ErasureSigner:
    """The operator side's signing key, for one deployment."""

    def __init__(self, private: Ed25519PrivateKey, deployment: Deployment) -> None:
        self._private = private
        self.key_id = key_id_of(_public_bytes(private))
        self.deployment = deployment

    def sign(self, claim: ErasureClaim) -> str:
        """The signature over ``claim``'s statement for this deployment and key (``ErasureClaim.statement``),
        base64url; the erasure carries ``key_id`` beside it."""
        statement = _statement(self.deployment, self.key_id, claim)
        return base64.urlsafe_b64encode(self._private.sign(statement)).rstrip(b"=").decode()


class ErasureVerifier:
    """The operator's public keys by id, for consumers and services acting on erasures in one deployment."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], deployment: Deployment) -> None:
        self._keys = dict(keys)
        self.deployment = deployment

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def refusal(self, event: Event) -> str | None:
        """Why the erasure ``event`` is not acted on (a dead-letter reason naming the rule), or None when
        it carries a listed key's signature over exactly its claim, made for this deployment."""
        data = event.data
        try:
            claim, key_id, signature = claim_of(event), data.key_id, data.signature
        except AttributeError:  # not an erasure's data
            return NOT_SIGNED_HERE
        return self.claim_refusal(claim, key_id, signature)

    def claim_refusal(self, claim: ErasureClaim, key_id: str, signature: str) -> str | None:
        """Why ``signature`` (base64url) by the key ``key_id`` does not vouch for ``claim`` in this
        deployment (the rule), or None when it does."""
        public = self._keys.get(key_id)
        if public is None:
            return KEY_NOT_LISTED
        try:
            public.verify(
                base64.urlsafe_b64decode(signature + "=="), _statement(self.deployment, key_id, claim)
            )
        # ArithmeticError: a time no statement can be made of (the contract bounds them; this never stops a reader)
        except (InvalidSignature, ValueError, TypeError, ArithmeticError):
            return NOT_SIGNED_HERE
        return None

    def verify(self, event: Event) -> bool:
        return self.refusal(event) is None


def erasure_signer(settings: Settings) -> ErasureSigner:
    """The signing key: ``HUB_ERASURE_SIGNING_KEY``, or the demo key on a local development stack. Where
    this process also lists verify keys, the signing key must be among them: its erasures would otherwise
    be dead-lettered everywhere (rotation adds the new entry everywhere first)."""
    encoded = settings.erasure_signing_key.get_secret_value() if settings.erasure_signing_key else None
    seed = _seed_bytes(encoded) if encoded is not None else None
    if seed is None or seed == _DEMO_SEED:
        _only_locally(
            settings,
            "HUB_ERASURE_SIGNING_KEY is unset (or the demo key): only the operator side "
            "(hub erase, the shared-view API) holds it; set it to 32 random bytes, base64",
        )
        seed = _DEMO_SEED
    signer = ErasureSigner(Ed25519PrivateKey.from_private_bytes(seed), Deployment.of(settings))
    if settings.erasure_verify_keys and signer.key_id not in parse_verify_keys(settings.erasure_verify_keys):
        raise ValueError(
            "HUB_ERASURE_SIGNING_KEY (the demo key where it is unset) is not among HUB_ERASURE_VERIFY_KEYS: "
            "every service would dead-letter its erasures; add its entry (hub erasure-key prints it) to "
            "HUB_ERASURE_VERIFY_KEYS everywhere first"
        )
    return signer


def erasure_signer_if_held(settings: Settings) -> ErasureSigner | None:
    """For a service that may erase but need not (the shared-view API's ``DELETE /persons``): the signer
    where this process holds the key (or on a local stack), else None, and the service refuses erasures."""
    try:
        return erasure_signer(settings)
    except InsecureConfiguration:
        return None


def erasure_verifier(settings: Settings) -> ErasureVerifier:
    """The operator's public keys: ``HUB_ERASURE_VERIFY_KEYS``; else the one of ``HUB_ERASURE_SIGNING_KEY``
    where this process holds it; else the demo key on a local development stack."""
    if settings.erasure_verify_key is not None:
        raise ValueError(
            "HUB_ERASURE_VERIFY_KEY was replaced by HUB_ERASURE_VERIFY_KEYS (key_id:public key entries, "
            "comma-separated; hub erasure-key prints a key's entry): unset it"
        )
    if settings.erasure_verify_keys:
        keys = parse_verify_keys(settings.erasure_verify_keys)
    elif settings.erasure_signing_key:
        public = _public_bytes(
            Ed25519PrivateKey.from_private_bytes(_seed_bytes(settings.erasure_signing_key.get_secret_value()))
        )
        keys = {key_id_of(public): public}
    else:
        keys = {key_id_of(_DEMO_PUBLIC): _DEMO_PUBLIC}
    if _DEMO_PUBLIC in keys.values():
        _only_locally(
            settings,
            "HUB_ERASURE_VERIFY_KEYS is unset (or lists the demo key): set it to the entry of the operator "
            "side's HUB_ERASURE_SIGNING_KEY (hub erasure-key prints it)",
        )
    return ErasureVerifier(
        {key_id: Ed25519PublicKey.from_public_bytes(raw) for key_id, raw in keys.items()},
        Deployment.of(settings),
    )


def _only_locally(settings: Settings, problem: str) -> None:
    if not settings.is_local_development():
        raise InsecureConfiguration(
            f"refusing to start with a public erasure key: {problem}. On a local development stack set "
            "HUB_ENVIRONMENT=local (hub stack up, ./dev demo and ./dev test do)."
        )
