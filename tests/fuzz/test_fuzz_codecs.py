"""Property tests of the two readers of hostile bytes: the CSV reader and the event decoder.

Whatever the bytes, each either reads them or refuses them with its own error (``FileError``,
``PoisonMessage``) — never any other exception, never an answer that grows with the input, never a
header's value in a reason an operator sees.
"""

from __future__ import annotations

import os
import string

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.envelope import Family, PoisonMessage, decode, encode
from infra.codecs.csv_columns import COLUMNS
from infra.codecs.csv_rows import FileError
from infra.codecs.field_errors import FieldError
from producers.submission import to_event
from tests import factories
from tests.helpers import read_rows

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

_CHARS = [*"abc0,\"'\r\n\t=+-@;；、:", "\x00", "\x1b", "\u3000", "髙", "𠮷", "ｱ"]
_CELLS = ["令和6年4月1日", "R6.4.1", "2025-04-01", "authority:131041", '=HYPERLINK("x")', "1" * 200]
nasty_text = st.one_of(st.text(alphabet=st.sampled_from(_CHARS), max_size=60), st.sampled_from(_CELLS))


def _bounded(error: FieldError) -> None:
    shown = orjson.dumps(error.for_client())
    assert len(shown) < 4_000, len(shown)


@FAST
@given(family=st.sampled_from(sorted(COLUMNS)), content=st.binary(max_size=2_000))
def test_csv_reader_takes_any_bytes(family: str, content: bytes) -> None:
    try:
        _, _, rows = read_rows(family, content)
        for row in rows:
            for error in row.errors:
                _bounded(error)
    except FileError as exc:
        assert len(str(exc)) < 4_000


@FAST
@given(
    family=st.sampled_from(sorted(COLUMNS)),
    header=st.lists(
        st.one_of(st.sampled_from(["person_key", "site", "氏名", "生年月日", "x"]), nasty_text), max_size=12
    ),
    rows=st.lists(st.lists(nasty_text, max_size=14), max_size=8),
    encoding=st.sampled_from(["utf-8", "cp932", "utf-8-sig"]),
)
def test_csv_reader_takes_any_table(
    family: str, header: list[str], rows: list[list[str]], encoding: str
) -> None:
    """Tables of hostile cells (control characters, formulas, era dates, characters CP932 lacks)."""
    table = [header, *rows]
    text = "\r\n".join(",".join(f'"{c.replace(chr(34), chr(34) * 2)}"' for c in row) for row in table)
    content = text.encode(encoding, errors="replace")
    try:
        _, _, parsed = read_rows(family, content, max_rows=5, max_columns=10)
        for row in parsed:
            for error in row.errors:
                _bounded(error)
    except FileError as exc:
        assert len(str(exc)) < 4_000


SECRET = "Yamadataro"
_VALID = encode(to_event(factories.consent(factories.person_key()), None))
_REGISTRATION = encode(to_event(factories.registration(factories.person_key()), os.urandom(32)))

header_names = st.sampled_from(
    ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time", "content-type", "x"]
)
header_values = st.one_of(
    st.binary(max_size=40),
    st.just(SECRET.encode()),
    st.text(max_size=40).map(lambda t: (SECRET + t).encode()),
)


@FAST
@given(
    key=st.one_of(st.none(), st.binary(max_size=40)),
    headers=st.lists(st.tuples(header_names, header_values), max_size=10),
    value=st.one_of(st.none(), st.binary(max_size=300)),
)
def test_decoder_takes_any_record(
    key: bytes | None, headers: list[tuple[str, bytes]], value: bytes | None
) -> None:
    try:
        decode(key, headers, value)
    except PoisonMessage as poison:
        assert SECRET not in poison.reason and len(poison.reason) < 4_000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)


@FAST
@given(
    which=st.sampled_from(["consent", "registration"]),
    field=st.sampled_from(
        [
            "version",
            "form_version",
            "scopes",
            "recipients",
            "captured",
            "valid_from",
            "authority",
            "site",
            "person_key",
            "attributes",
            "personal",
            "office",
            "sex",
            "extra",
        ]
    ),
    replacement=json_values,
    header=st.sampled_from(["ce_time", "ce_type", "ce_specversion", "ce_id", "ce_source", None]),
)
def test_decoder_refuses_mutated_events_by_rule(
    which: str, field: str, replacement: object, header: str | None
) -> None:
    """A valid event with one field or one header replaced by anything: decoded or refused, and a
    refusal names a header or a field, never the header's value."""
    key, headers, value = _VALID if which == "consent" else _REGISTRATION
    data = orjson.loads(value) | {field: replacement}
    if header is not None:
        headers = [(k, f"{SECRET} {k}".encode() if k == header else v) for k, v in headers]
    try:
        event = decode(key, headers, orjson.dumps(data))
    except PoisonMessage as poison:
        assert SECRET not in poison.reason
        assert poison.reason.startswith(("header ", "value", "key", f"{which} data invalid")), poison.reason
    else:
        assert event.family is Family(which)
        text = orjson.dumps(event.data.model_dump(mode="json"))
        assert b"\\u0000" not in text  # nothing PostgreSQL cannot store gets through


def test_printable_alphabet_covers_what_people_type() -> None:
    """Control: the refusal of control characters does not refuse ordinary text."""
    sub = factories.registration(
        factories.person_key(),
        personal={"name": "髙橋\u3000𠮷子 " + string.printable.strip(), "birth_date": "1988-06-01",
                  "address": "東京都新宿区\n西新宿2-8-1\t(都庁)\r"},
    )  # fmt: skip
    to_event(sub, os.urandom(32))
