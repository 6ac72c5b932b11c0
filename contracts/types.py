"""Constrained scalar types shared by every event family.

Each type carries its rule, so a rejection names the field (pydantic's location), the rule and the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timezone
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, Strict, StringConstraints
from pydantic_core import PydanticCustomError

from domain.calendar import FIRST_YEAR, LAST_YEAR, AgeBand
from domain.codes import require_ascii_digits, validate_local_government_code

__all__ = ["AgeBand"]

# What PostgreSQL can store and what a person can type: no NUL (PostgreSQL text and jsonb cannot hold it)
# and no other C0 control character or DEL; tab, line feed and carriage return may occur in an address.
# As a pattern (not a Python validator) so that JSON Schema says it too and pydantic checks it in Rust.
PRINTABLE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
INT32_MAX = 2_147_483_647
"""The largest value of a PostgreSQL ``integer`` column; integers on the wire that land in one stop here."""


PersonKey = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{32}$"),
    Field(
        description="Pseudonymous person key (32 lowercase hex). It is the same for both sides and "
        "carries no personal data; it is the Kafka key, so one person's events stay in order.",
        examples=["3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"],
    ),
]

LocalGovernmentCode = Annotated[
    str,
    # The shape first, so the check-digit rule only ever sees six digits (full-width ones included: its
    # own first check is for ASCII digits).
    StringConstraints(pattern=r"^\d{6}$"),
    AfterValidator(validate_local_government_code),
    Field(
        description="全国地方公共団体コード (local government code, JIS X 0402) with its check digit.",
        examples=["131041"],
    ),
]


def _ascii_office(value: str) -> str:
    return require_ascii_digits(value, "office code")


# The schemas' patterns say \d, which JSON Schema (ECMAScript) reads as [0-9]; pydantic's regex reads it
# as any Unicode digit, so an explicit ASCII check follows each pattern (P1 in domain.provenance).
OfficeCode = Annotated[
    str,
    StringConstraints(pattern=r"^\d{4}$"),
    AfterValidator(_ascii_office),
    Field(description="Hello Work office (公共職業安定所) code, 4 digits.", examples=["1301"]),
]


# Not memoised: a 求職番号 is personal data, and a cache would keep it in memory past the person's erasure.
def _ascii_job_seeker_number(value: str) -> str:
    require_ascii_digits(value, "job seeker number")
    return value


# Rust's regex (pydantic's) reads ``\d`` as any Unicode digit: the validator keeps full-width digits out.
JobSeekerNumber = Annotated[
    str,
    StringConstraints(pattern=r"^\d{5}-\d{8}$"),
    AfterValidator(_ascii_job_seeker_number),
    Field(description="Hello Work 求職番号"),
]


def _validate_site_id(value: str) -> str:
    require_ascii_digits(value.replace("-", ""), "site id")
    validate_local_government_code(value[:6])
    return value


SiteId = Annotated[
    str,
    StringConstraints(pattern=r"^\d{6}-\d{2}$"),
    AfterValidator(_validate_site_id),
    Field(
        description="Joint site (拠点) id: the running authority's local government code, '-', and a "
        "two-digit site number. The prefix is what ties a site to its authority.",
        examples=["131041-01"],
    ),
]

_CHECKPOINTS = (1, 3, 6)  # months after a placement at which its retention is checked (定着)


def _checkpoint(months: int) -> int:
    if months not in _CHECKPOINTS:
        raise PydanticCustomError("literal_error", "Input should be 1, 3 or 6")  # Literal's own words
    return months


# ``Literal[1, 3, 6]`` would read ``true`` as 1 (True == 1 in Python, and a Literal cannot be strict): a
# strict integer and the check of the three values, stated in the JSON Schema as the Literal's enum.
CheckpointMonths = Annotated[
    int,
    Strict(),
    AfterValidator(_checkpoint),
    Field(json_schema_extra={"enum": list(_CHECKPOINTS)}),
]

# --- dates and instants: one spelling each, plausible years only ----------------------------------------
# pydantic's lax mode reads a Unix time (1775001600, 1775001600.0, "1775001600") as a date or an instant, a
# midnight datetime ("2026-04-01T00:00:00") as a date, and "2026-04-01 09:00+0900" or "...t09:00:00z" as an
# instant; msgspec (the consume side) reads others again. A value from outside takes exactly one spelling:
# a day is RFC 3339's full-date, YYYY-MM-DD in ASCII digits; an instant is RFC 3339's date-time with
# seconds, at most six fractional digits (what a datetime holds: no reader rounds or truncates) and an
# explicit offset, ``Z`` or ±HH:MM. A naive time is refused, never taken as UTC or Japan time (a batch
# file's cells are the one place where Japan time is assumed: ``infra.codecs.csv_rows`` writes the offset
# in before the contract sees the value). Checked before pydantic's own parser, which then only ever reads
# the one spelling; values built in Python (a ``date``, an aware ``datetime``) pass as they are.
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
INSTANT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
DAY_SPELLING = "must be a date written YYYY-MM-DD in ASCII digits (RFC 3339 full-date), nothing else"
INSTANT_SPELLING = (
    "must be an RFC 3339 date-time written YYYY-MM-DDTHH:MM:SS, optionally .ffffff (1 to 6 digits), then Z or "
    "an offset ±HH:MM (a time without an offset is refused)"
)
_DAY = re.compile(DAY_PATTERN).fullmatch
_INSTANT = re.compile(INSTANT_PATTERN).fullmatch


def instant_text(value: str) -> bool:
    """Whether ``value`` is an instant in the one spelling (the envelope's ``ce_time`` reads it too)."""
    return _INSTANT(value) is not None


# The same spelling told in bytes at a sixth of the regex's cost (the consume side's quick paths read one
# or two instants per event): with every digit masked to 0 the text is one of a few shapes (seconds, zero
# to six fractional digits, Z or an offset), and an offset's hour and minute are in range. For any bytes
# the verdict of ``INSTANT_PATTERN`` (``tests/unit/test_wire.py``); the quick paths inline it.
DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
INSTANT_SHAPES: dict[bytes, bool] = {  # shape → whether it ends in an offset ±HH:MM
    b"0000-00-00T00:00:00" + fraction + zone: zone != b"Z"
    for fraction in [b"", *(b"." + b"0" * n for n in range(1, 7))]
    for zone in (b"Z", b"+00:00", b"-00:00")
}


def instant_bytes(raw: bytes) -> bool:
    """Whether ``raw`` is an instant in the one spelling (``INSTANT_PATTERN``), in a few C calls."""
    offset = INSTANT_SHAPES.get(raw.translate(DIGITS_AS_ZERO))
    return offset is not None and (not offset or (raw[-5:-3] <= b"23" and raw[-2] <= 0x35))  # 0x35: "5"


def _day_spelling(value: Any) -> Any:
    if type(value) is str:
        if _DAY(value) is not None:
            return value
    elif type(value) is date:  # not a datetime, which is a date too
        return value
    raise PydanticCustomError("date_spelling", DAY_SPELLING)


def _instant_spelling(value: Any) -> Any:
    if type(value) is str:
        if _INSTANT(value) is not None:
            return value
    elif isinstance(value, datetime) and value.tzinfo is not None:
        return value
    raise PydanticCustomError("datetime_spelling", INSTANT_SPELLING)


SPELLING_CHECKS = frozenset({_day_spelling, _instant_spelling})
"""The checks of a value's spelling before pydantic parses it. ``contracts.wire`` mirrors them with its
own readers (msgspec's ``date`` reads exactly YYYY-MM-DD from JSON; its time fields are text held to
``INSTANT_PATTERN``) rather than calling them."""

# The days and instants the hub has any use for: the programme began in 2011, and nothing it records lies a
# century ahead. Bounded so that turning any accepted instant to UTC or JST cannot overflow (an aware
# ``0001-01-01T00:00:00+23:59`` is before datetime's first instant in UTC): every reader — the contract,
# the consume side's quick decoders, the envelope's ``time`` — refuses the same range. A birth date may lie
# further back: 1900 onwards (a year 0001 or 9999 is forged).
EARLIEST_INSTANT = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
END_OF_INSTANTS = datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC)
INSTANT_RULE = f"must lie in {FIRST_YEAR}-01-01T00:00:00Z .. {LAST_YEAR}-12-31T23:59:59Z"
EARLIEST_DAY, LAST_DAY = date(FIRST_YEAR, 1, 1), date(LAST_YEAR, 12, 31)
DAY_RULE = f"must lie in {EARLIEST_DAY} .. {LAST_DAY}"
EARLIEST_BIRTH_DATE = date(1900, 1, 1)
BIRTH_DATE_RULE = f"must lie in {EARLIEST_BIRTH_DATE} .. {LAST_DAY}"


def in_supported_range(value: datetime) -> bool:
    """Whether an aware instant lies in the range every reader accepts (compared as instants, so no
    conversion that could overflow happens first)."""
    # A fixed offset (what ``fromisoformat`` gives) is less than a day, so an instant whose own year lies
    # strictly inside the range lies in it: read first, as comparing across offsets costs ~20 times more
    # (every consumer checks an instant or two per event). Any other instant is compared.
    if type(value.tzinfo) is timezone and 2000 < value.year < 2099:
        return True
    try:
        return EARLIEST_INSTANT <= value < END_OF_INSTANTS
    except (ArithmeticError, ValueError):  # an offset that takes the instant out of datetime's range
        return False


def supported_instant(value: datetime) -> datetime:
    if not in_supported_range(value):
        raise PydanticCustomError("datetime_range", INSTANT_RULE)  # the rule, never the value
    return value


def supported_day(value: date) -> date:
    if not EARLIEST_DAY <= value <= LAST_DAY:
        raise PydanticCustomError("date_range", DAY_RULE)
    return value


def plausible_birth_date(value: date) -> date:
    if not EARLIEST_BIRTH_DATE <= value <= LAST_DAY:
        raise PydanticCustomError("date_range", BIRTH_DATE_RULE)
    return value


DAY_RANGES: dict[Callable[[date], date], tuple[date, date]] = {
    supported_day: (EARLIEST_DAY, LAST_DAY),
    plausible_birth_date: (EARLIEST_BIRTH_DATE, LAST_DAY),
}
"""The days each range check above lets through, first and last: ``contracts.wire`` compares them inline
rather than calling the check (a call for every day of every event)."""


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_instant_spelling),
    AfterValidator(supported_instant),
    Field(json_schema_extra={"pattern": INSTANT_PATTERN}),
]
"""Every instant on the wire: one spelling, with its offset (naive datetimes are refused), in the range above."""

Day = Annotated[
    date,
    BeforeValidator(_day_spelling),
    AfterValidator(supported_day),
    # The schema says the range too: a year 20xx.
    Field(json_schema_extra={"pattern": r"^20[0-9]{2}-[0-9]{2}-[0-9]{2}$"}),
]
"""A day of the programme (a registration, a referral, a consent's validity …): YYYY-MM-DD, 2000–2099."""

BirthDate = Annotated[
    date,
    BeforeValidator(_day_spelling),
    AfterValidator(plausible_birth_date),
    Field(json_schema_extra={"pattern": r"^(19|20)[0-9]{2}-[0-9]{2}-[0-9]{2}$"}),
]
"""A person's birth date: YYYY-MM-DD, 1900–2099."""


class Sex(StrEnum):
    """男女別 as Hello Work statistics count it."""

    MALE = "male"
    FEMALE = "female"
    NOT_STATED = "not_stated"


class AttributeCategory(StrEnum):
    """Attribute categories (属性) of the programme's target groups."""

    PUBLIC_ASSISTANCE = "public_assistance"  # 生活保護受給者
    CHILD_REARING_ALLOWANCE = "child_rearing_allowance"  # 児童扶養手当受給者
    HOUSING_BENEFIT = "housing_benefit"  # 住居確保給付金受給者
    NEEDY_PERSON_SUPPORT = "needy_person_support"  # 生活困窮者自立支援
    DISABILITY = "disability"  # 障害者
    YOUTH = "youth"  # 若者
    PARENTING = "parenting"  # 子育て中の方
    GENERAL = "general"  # 一般
