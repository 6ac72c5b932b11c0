"""Envelope encryption of personal data: one data key per person, wrapped by the master key.

Each person's personal fields are sealed with AES-256-GCM under that person's data key, with the person
key as associated data so a block cannot be moved to another person. Data keys live in PostgreSQL only
in wrapped form. Erasure deletes the person's keys: every copy of their sealed data (topics, dead-letter
topic, database) becomes unreadable at once — crypto-shredding.

The ``cryptography`` package (OpenSSL's AES-GCM) is used because it is the mature, audited choice;
nothing here implements a primitive.
"""

from __future__ import annotations

import binascii
import hmac
import os
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import asyncpg
import msgspec
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ValidationError

from contracts import wire
from contracts.envelope import PERSONAL_MODELS
from contracts.events import Sealed, built
from infra.codecs.field_errors import from_validation_error
from infra.config import Settings, master_key_bytes
from infra.db import text_array

_URLSAFE = bytes.maketrans(b"+/", b"-_")
_UNURLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64(data: bytes) -> str:
    """base64url without padding (``base64.urlsafe_b64encode`` is this, through two more Python calls)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """``base64.urlsafe_b64decode`` (as lax), without its three Python calls: a block has two per open."""
    return binascii.a2b_base64(text.encode("ascii").translate(_UNURLSAFE) + b"=" * (-len(text) % 4))


def derived_key(encoded_master_key: str, purpose: str) -> bytes:
    """A secret for one purpose (e.g. keyed digests), derived from the master key: HMAC-SHA256(master,
    purpose). Rotating the master key rotates it too."""
    return hmac.new(master_key_bytes(encoded_master_key), b"ittai:" + purpose.encode(), "sha256").digest()


def kid_for(person_key: str, version: int = 1) -> str:
    return f"pdk-{person_key}-{version}"


def seal(data_key: bytes, person_key: str, fields: dict[str, Any], version: int = 1) -> Sealed:
    ((kid, nonce, ct),) = seal_plaintexts([(data_key, person_key, orjson.dumps(fields))], version)
    # Built, not validated: the three values are made here in the shapes the contract's patterns describe.
    return built(
        Sealed,
        {"kid", "nonce", "ct"},  # as given to ``Sealed.model_construct(kid=…, nonce=…, ct=…)``
        {"alg": "A256GCM", "kid": kid, "nonce": nonce, "ct": ct},
    )


def seal_plaintexts(
    blocks: Sequence[tuple[bytes, str, bytes]], version: int = 1
) -> list[tuple[str, str, str]]:
    """Seal many personal blocks, each (data key, person key, the block's JSON): their (kid, nonce, ct)
    as ``Sealed`` holds them. The nonces are drawn in one call (12 random bytes each)."""
    nonces = os.urandom(12 * len(blocks))
    sealed: list[tuple[str, str, str]] = []
    for i, (data_key, person_key, plain) in enumerate(blocks):
        nonce = nonces[12 * i : 12 * i + 12]
        ct = AESGCM(data_key).encrypt(nonce, plain, person_key.encode())
        sealed.append((kid_for(person_key, version), _b64(nonce), _b64(ct)))
    return sealed


def open_sealed(data_key: bytes, person_key: str, sealed: Sealed) -> dict[str, Any]:
    try:
        plain = AESGCM(data_key).decrypt(_unb64(sealed.nonce), _unb64(sealed.ct), person_key.encode())
    except (InvalidTag, ValueError):  # ValueError: binascii.Error, a ct of 4n+1 characters (see Sealed)
        raise ValueError("sealed block does not open with this person's key") from None
    result: dict[str, Any] = orjson.loads(plain)
    return result


def _no_checks(data: Any) -> None:
    """A struct msgspec checks whole."""


# Each personal contract's struct decoder and the rules msgspec does not check (``contracts.wire``; they
# keep no memo of personal values).
_PERSONAL_CHECKS: dict[type[BaseModel], tuple[Callable[[bytes], Any], Callable[[Any], None]]] = {
    model: (msgspec.json.Decoder(struct).decode, checks or _no_checks)
    for model in PERSONAL_MODELS.values()
    for struct, checks in (wire.checked_struct(model),)
}


_PERSONAL_BY_FAMILY: dict[str, type[BaseModel]] = {f.value: m for f, m in PERSONAL_MODELS.items()}


class UnfitBlock(Exception):
    """A personal block that opens but is not what its family's contract says it holds (a rogue producer
    with the person's key: a NUL in the name, not JSON, a wrong type). ``reason`` names the field and the
    rule, never a value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Opener:
    """Opens many people's sealed blocks (a consumer's batch, a delivery), keeping one cipher per person:
    this is the shared view's hot loop. A block that cannot be read any more — the person was erased (no
    key), or it was sealed under a data key since deleted — opens to ``None``, and callers show the person
    masked. Blocks come in their JSON form (``{"nonce", "ct", …}``).

    ``checked`` is for a block as it arrives: one the family's personal contract refuses raises
    ``UnfitBlock``, so the consumer refuses that event alone (dead-lettered), the same in live and in
    replay. Calling the opener (for blocks stored earlier) keeps such a block shut instead."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = keys
        self._ciphers: dict[str, AESGCM] = {}

    def _plain(self, person_key: str, sealed: Mapping[str, Any]) -> bytes | None:
        cipher = self._ciphers.get(person_key)
        if cipher is None:
            key = self._keys.get(person_key)
            if key is None:
                return None  # erased: the block stays shut and the person shows as masked
            cipher = self._ciphers[person_key] = AESGCM(key)
        try:
            plain: bytes = cipher.decrypt(_unb64(sealed["nonce"]), _unb64(sealed["ct"]), person_key.encode())
        except (InvalidTag, ValueError):  # ValueError: binascii.Error, a ct of 4n+1 characters (see Sealed)
            return None
        return plain

    def checked(
        self, person_key: str, family: str, sealed: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """The opened block of a ``family`` event, checked against that family's personal contract."""
        if sealed is None:
            return None
        model = _PERSONAL_BY_FAMILY.get(family)
        if model is None:  # before opening: what the contract did not check may not even be a block
            raise UnfitBlock(f"personal: a {family} event carries no personal block")
        plain = self._plain(person_key, sealed)
        if plain is None:
            return None
        structural, checks = _PERSONAL_CHECKS[model]
        try:  # the contract's msgspec struct: at least as strict as the contract, at a tenth of its cost
            if plain.count(b"[") + plain.count(b"{") > wire.NESTING_MAX:  # see wire.NESTING_MAX
                raise ValueError("nested deeper than the contract may read")
            checks(structural(plain))
        except (msgspec.DecodeError, ValueError, TypeError, AttributeError, RecursionError):
            try:  # refused, or the contract may accept a lax spelling: the contract decides and says why
                model.model_validate_json(plain)
            except ValidationError as exc:
                rules = sorted({e.operator_rule for e in from_validation_error(exc, prefix=("personal",))})
                raise UnfitBlock("; ".join(rules[:5])) from None
        try:  # pydantic reads NaN and 1e400 (as inf), which JSON has not and orjson refuses
            opened: dict[str, Any] = orjson.loads(plain)
        except orjson.JSONDecodeError:
            raise UnfitBlock("personal: not valid JSON") from None
        return opened

    def known_fit(self, person_key: str, sealed: Mapping[str, Any]) -> dict[str, Any] | None:
        """A block that opened and passed its family's contract when it arrived, under the key the person
        still has (the shared view's ``block_opens``, migration 047): the same bytes open to the same
        block, so it is not checked again (the check is most of an opening's cost). ``None`` if it does
        not open after all."""
        plain = self._plain(person_key, sealed)
        if plain is None:
            return None
        try:
            opened: dict[str, Any] = orjson.loads(plain)
        except orjson.JSONDecodeError:
            return None
        return opened

    def __call__(
        self, person_key: str, family: str, sealed: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        try:
            return self.checked(person_key, family, sealed)
        except UnfitBlock:
            return None  # stored before blocks were checked on arrival: it stays shut


class KeyStore:
    """Per-person data keys in PostgreSQL (table ``person_data_keys``), wrapped by the master key.

    Unwrapped keys are cached in process memory for speed; ``forget`` drops a cached key on erasure, and
    ``forget_everywhere`` drops it from every key store of the process (``ittai.erasure.v1``, followed by
    ``infra.erasure_follower`` in every long-running service). The cache keeps the ``cache_max`` keys
    remembered last: it saves only the unwrapping (the database is asked every time), and a consumer
    replaying a national year meets millions of people (~190 bytes each).
    """

    def __init__(self, master_key: bytes, *, cache_max: int = 65_536) -> None:
        self._wrap = AESGCM(master_key)
        self._cache: dict[str, bytes] = {}
        self._cache_max = cache_max
        _STORES.add(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyStore:
        settings.require_secrets()  # never the demo key outside a local development stack
        return cls(master_key_bytes(settings.master_key))

    def _wrap_key(self, person_key: str, data_key: bytes, nonce: bytes | None = None) -> bytes:
        nonce = nonce or os.urandom(12)
        return nonce + self._wrap.encrypt(nonce, data_key, b"pdk:" + person_key.encode())

    def _unwrap_key(self, person_key: str, wrapped: bytes) -> bytes:
        return self._wrap.decrypt(wrapped[:12], wrapped[12:], b"pdk:" + person_key.encode())

    async def keys_for(self, conn: asyncpg.Connection, person_keys: Iterable[str]) -> dict[str, bytes]:
        """Data keys for these people, created where missing.

        Runs outside any transaction on purpose: a key cached here must be one that is committed, or a
        rolled-back caller would leave events sealed under a key that no longer exists. A person on the
        erasure register gets a key that is never stored nor cached (the database refuses to store one,
        migrations 015 and 020): nothing sealed under it opens, and the accepting transaction's erasure fence
        refuses their events.
        """
        if conn.is_in_transaction():
            raise RuntimeError("KeyStore.keys_for must not run inside a transaction")
        person_keys = list(person_keys)
        epoch = _forgetting.epoch
        # The answer is built here, never read back from the cache after an await: an erasure followed in
        # this process (``forget_everywhere``) may empty the cache at any await point.
        found = {p: self._cache[p] for p in set(person_keys) if p in self._cache}
        if found:  # a key erased by another process must not live on in this one's memory
            alive = {
                r[0]
                for r in await conn.fetch(
                    "SELECT person_key FROM person_data_keys WHERE person_key = ANY($1::text[])", list(found)
                )
            }
            for person in [p for p in found if p not in alive]:
                del found[person]
                self._cache.pop(person, None)
        wanted = [p for p in dict.fromkeys(person_keys) if p not in found]
        unstored: dict[str, bytes] = {}  # people on the erasure register: a key that is never stored
        while wanted:  # again only if a key read back was deleted meanwhile (an erasure): made anew
            # 32 random bytes a key and 12 a wrapping nonce, drawn in one call for all of them.
            drawn = os.urandom(44 * len(wanted))
            fresh = {p: drawn[44 * i : 44 * i + 32] for i, p in enumerate(wanted)}
            wrapped = [
                self._wrap_key(p, fresh[p], drawn[44 * i + 32 : 44 * i + 44]) for i, p in enumerate(wanted)
            ]
            # One round trip for the usual case (all new): the keys this statement inserted are ours.
            try:
                inserted = await conn.fetch(
                    "INSERT INTO person_data_keys (person_key, version, wrapped) "
                    "SELECT p, 1, w FROM unnest($1::text[], $2::bytea[]) AS t(p, w) "
                    "ON CONFLICT (person_key, version) DO NOTHING RETURNING person_key",
                    wanted,
                    wrapped,
                )
            except asyncpg.RestrictViolationError:
                # Someone among them is on the erasure register (migration 020 refuses the statement whole):
                # nothing was stored; they are found below, and the others' keys inserted again.
                inserted, refused = [], True
            else:
                refused = False
            for row in inserted:
                found[row["person_key"]] = fresh[row["person_key"]]
            existing = [p for p in wanted if p not in found]
            if existing:  # keys made earlier (or just now by another process): read them back
                rows = await conn.fetch(
                    "SELECT person_key, wrapped FROM person_data_keys WHERE person_key = ANY($1::text[]) "
                    "AND version = 1",
                    existing,
                )
                for row in rows:
                    found[row["person_key"]] = self._unwrap_key(row["person_key"], row["wrapped"])
            wanted = [p for p in wanted if p not in found]
            if wanted:  # not stored and not there: erased (migration 020 stores no key for the erased)
                erased = await conn.fetch(
                    "SELECT person_key FROM sv_erasures WHERE person_key = ANY($1::text[])", wanted
                )
                if refused and not erased:
                    raise RuntimeError("the data-key insert was refused but nobody among them is erased")
                for row in erased:
                    unstored[row["person_key"]] = fresh[row["person_key"]]
                wanted = [p for p in wanted if p not in unstored]
        self._remember(found, epoch)
        # What is sealed under an unstored key no key opens; the acceptance's erasure fence refuses it.
        return {p: found[p] if p in found else unstored[p] for p in person_keys}

    def sealing_keys(self, stored: Iterable[tuple[str, bytes]], person_keys: Iterable[str]) -> SealingKeys:
        """Keys to seal these people's blocks with before the accepting transaction, which stores the fresh
        ones (``producers.outbox.accept_sealed``): ``stored`` are the (person, wrapped key) rows the caller
        read from ``person_data_keys`` (``stored_keys``), and everyone without a row gets a fresh key.

        Nothing is cached here: a fresh key is cached once its transaction stored it (``remember``), a
        stored key read before an erasure must not come back into memory after it. The cache saves the
        unwrapping only; a person the database has no key for is forgotten here too."""
        cache = self._cache
        keys: dict[str, bytes] = {}
        for person, wrapped in stored:
            key = cache.get(person)  # read once: an erasure followed here may empty the cache at an await
            keys[person] = key if key is not None else self._unwrap_key(person, wrapped)
        wanted = [p for p in dict.fromkeys(person_keys) if p not in keys]
        fresh: dict[str, bytes] = {}
        if wanted:
            # 32 random bytes a key and 12 a wrapping nonce, drawn in one call for all of them.
            drawn = os.urandom(44 * len(wanted))
            for i, person in enumerate(wanted):
                cache.pop(person, None)
                keys[person] = drawn[44 * i : 44 * i + 32]
                fresh[person] = self._wrap_key(person, keys[person], drawn[44 * i + 32 : 44 * i + 44])
        return SealingKeys(keys, fresh, _forgetting.epoch)

    def remember(self, sealing: SealingKeys, stored: Iterable[str]) -> None:
        """Cache the keys of ``stored`` people once the transaction that stored (or found) them committed,
        unless an erasure was followed since ``sealing`` was made."""
        self._remember({p: sealing.keys[p] for p in stored}, sealing.epoch)

    async def existing_keys(self, conn: asyncpg.Connection, person_keys: Iterable[str]) -> dict[str, bytes]:
        """Data keys that still exist; erased people are simply absent.

        Asks the database every time which keys exist, even for keys cached here: an erasure by another
        process (``hub erase``, another service) deletes the row, and a key held only in this process's
        memory must not outlive it. The cache saves the unwrapping, not the question."""
        keys = list(set(person_keys))
        if not keys:
            return {}
        epoch = _forgetting.epoch
        # Which wrapped keys to unwrap is decided here, not in SQL: ``CASE WHEN person_key = ANY($2)``
        # scanned the cached list once per row (a batch's 2,000 people: millions of comparisons).
        rows = await conn.fetch(
            "SELECT person_key, wrapped FROM person_data_keys WHERE person_key = ANY($1::text::text[]) "
            "AND version = 1",
            text_array(keys),
        )
        found: dict[str, bytes] = {}
        cache = self._cache
        for person, wrapped in rows:  # positionally: a batch reads the keys of every one of its people
            key = cache.get(person)  # read once: an erasure followed here may empty the cache at an await
            found[person] = key if key is not None else self._unwrap_key(person, wrapped)
        for person in keys:
            if person not in found:
                self._cache.pop(person, None)  # erased elsewhere: forget it here too
        self._remember(found, epoch)
        return found

    def _remember(self, found: dict[str, bytes], epoch: int) -> None:
        """Cache keys read before an await, unless an erasure was followed meanwhile: a key read just
        before its deletion would otherwise be put back into memory after ``forget_everywhere`` ran.
        (The caller's own answer stands: the database's fences decide what it may do with it.)"""
        if _forgetting.epoch == epoch:
            cache = self._cache
            for person, key in found.items():
                cache.pop(person, None)  # re-inserted: the dict's order is the order remembered
                cache[person] = key
            excess = len(cache) - self._cache_max
            if excess > 0:
                for person in list(islice(cache, excess)):
                    del cache[person]

    async def erase(self, conn: asyncpg.Connection, person_key: str) -> bool:
        self._cache.pop(person_key, None)
        status = await conn.execute("DELETE FROM person_data_keys WHERE person_key = $1", person_key)
        return status != "DELETE 0"

    def forget(self, person_key: str) -> None:
        self._cache.pop(person_key, None)

    def holds(self, person_key: str) -> bool:
        """Whether this process has the person's unwrapped key in memory (operators' and tests' question)."""
        return person_key in self._cache


def stored_keys(param: int) -> str:
    """A select list entry ``stored_keys``: the (person, wrapped key) rows of ``person_data_keys`` for the
    people in parameter ``$param`` (text[]), for a caller's own statement (the group commit reads them
    with the registers) and then ``KeyStore.sealing_keys``."""
    return (
        "ARRAY(SELECT (person_key, wrapped) FROM person_data_keys "
        f"WHERE person_key = ANY(${param}::text[]) AND version = 1) AS stored_keys"
    )


@dataclass(frozen=True, slots=True)
class SealingKeys:
    """Data keys for sealing before the accepting transaction (``KeyStore.sealing_keys``)."""

    keys: dict[str, bytes]  # person -> data key: stored, or fresh
    fresh: dict[str, bytes]  # person -> wrapped fresh key, for the accepting transaction to store
    epoch: int  # the forgetting epoch when the keys were read


# Every key store of this process, so that an erasure reaches all of them (a service may hold several: an
# API's, a consumer's, an adapter's). Weak: a store nobody uses any more goes with its keys.
_STORES: weakref.WeakSet[KeyStore] = weakref.WeakSet()


class _Forgetting:
    """How many times this process forgot keys (``forget_everywhere``, ``forget_all``)."""

    epoch = 0


_forgetting = _Forgetting()


def forget_everywhere(person_keys: Iterable[str]) -> None:
    """Erasure: drop these people's unwrapped data keys from every key store of this process."""
    people = list(person_keys)
    _forgetting.epoch += 1
    for store in list(_STORES):
        for person in people:
            store.forget(person)


def forget_all() -> None:
    """Drop every cached key of this process (an erasure follower that may have missed erasures: the
    caches save work, never knowledge — every key is read again from the database when needed)."""
    _forgetting.epoch += 1
    for store in list(_STORES):
        store._cache.clear()
