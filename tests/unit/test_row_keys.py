"""A file row's key (and a request's digest) stays what it was: a file imported before is recognised when
imported again, so the digest of a row must never change, however it is computed."""

from __future__ import annotations

import hmac
from typing import Any

from contracts.envelope import Family
from infra.codecs.csv_rows import ParsedRow
from producers.adapters.service import _row_key, request_digest
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
    """The importer feeds the HMAC the family once a file (``_row_key``): the same digest."""
    keyed = hmac.new(_SECRET, b"placement\x00", "sha256")
    assert _row_key(keyed, ParsedRow(2, _BODY, ())) == _KNOWN
    for family, make in (
        (Family.PLACEMENT, lambda pk: factories.placement(pk)),
        (Family.REGISTRATION, lambda pk: factories.registration(pk)),
        (Family.RETENTION, lambda pk: factories.retention(pk, "p" * 32)),
    ):
        keyed = hmac.new(_SECRET, family.value.encode() + b"\x00", "sha256")
        for _ in range(3):
            data = make(factories.person_key()).data
            assert _row_key(keyed, ParsedRow(2, data, ())) == request_digest(_SECRET, family, data).hex()
