"""A file row's key (and a request's digest) stays what it was: a file imported before is recognised when
imported again, so the digest of a row must never change, however it is computed."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.envelope import Family
from producers.adapters.csv_chunks import RowKeys
from producers.adapters.service import request_digest
from tests import factories

_SECRET = b"k" * 32
_BODY: dict[str, Any] = {
    "person_key": "a" * 32,
    "placed_on": "2025-05-12",
    "personal": {"employer_name": "株式会社𠮷野"},
}
# HMAC-SHA256(secret, b"placement\0" + the body's JSON with sorted keys), as every earlier version made it
_KNOWN = "1c941c04a90c6e98f0d4b13a192feea7f23074223c7fa9568f08c1d5607a4ecf"


def test_a_rows_digest_is_the_one_files_were_imported_with() -> None:
    assert request_digest(_SECRET, Family.PLACEMENT, _BODY).hex() == _KNOWN


def test_a_prepared_hmac_gives_the_same_digest_every_time() -> None:
    keyed = hmac.new(_SECRET, digestmod="sha256")
    assert request_digest(keyed, Family.PLACEMENT, _BODY).hex() == _KNOWN
    assert request_digest(keyed, Family.PLACEMENT, _BODY).hex() == _KNOWN  # the prepared one is not used up
    assert request_digest(keyed, Family.PLACEMENT, {**_BODY, "placed_on": "2025-05-13"}).hex() != _KNOWN


def test_a_file_rows_key_is_its_request_digest() -> None:
    """The importer keys a file's rows once (``RowKeys``, the family fed once): the same digest."""
    assert RowKeys(_SECRET, Family.PLACEMENT)(_BODY) == _KNOWN
    for family, make in (
        (Family.PLACEMENT, lambda pk: factories.placement(pk)),
        (Family.REGISTRATION, lambda pk: factories.registration(pk)),
        (Family.RETENTION, lambda pk: factories.retention(pk, "p" * 32)),
    ):
        row_key = RowKeys(_SECRET, family)
        for _ in range(3):
            data = make(factories.person_key()).data
            assert row_key(data) == request_digest(_SECRET, family, data).hex()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    # shorter than SHA-256's block (64 bytes), one block, longer (hashed first)
    secret=st.binary(max_size=63)
    | st.binary(min_size=64, max_size=65)
    | st.binary(min_size=66, max_size=200),
    family=st.sampled_from(list(Family)),
    rows=st.lists(st.dictionaries(st.text(max_size=12), _JSON, max_size=6), min_size=1, max_size=3),
)
def test_fuzz_row_keys_are_the_standard_librarys_hmac(
    secret: bytes, family: Family, rows: list[dict[str, Any]]
) -> None:
    """``RowKeys`` writes HMAC-SHA256 out from hashlib: for any key (of any length) and any rows, each
    key is ``hmac``'s, and the prepared one is not used up by a row."""
    row_key = RowKeys(secret, family)
    for data in rows:
        assert row_key(data) == request_digest(secret, family, data).hex()
        assert (
            row_key(data)
            == hmac.new(secret, family.value.encode() + b"\x00" + _sorted(data), "sha256").hexdigest()
        )


def _sorted(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
