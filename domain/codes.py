"""Reference codes used across the programme.

全国地方公共団体コード (local government code, JIS X 0402): 2-digit prefecture, 3-digit municipality and
a check digit computed with weights 6,5,4,3,2 over the first five digits: r = sum mod 11,
check = last digit of (11 − r).
"""

from __future__ import annotations

import re
from functools import lru_cache

_LG_CODE = re.compile(r"[0-9]{6}")  # not \d: it matches every Unicode digit (１, ١)
_WEIGHTS = (6, 5, 4, 3, 2)


class CodeError(ValueError):
    """A code that breaks a rule; the message names the rule, never the value (it may be anything a
    sender typed, and refusals reach logs, dead letters and other parties)."""


def lg_check_digit(first_five: str) -> int:
    total = sum(int(d) * w for d, w in zip(first_five, _WEIGHTS, strict=True))
    return (11 - total % 11) % 10


@lru_cache(maxsize=8192)  # ~1,800 authorities: every decode checks codes, the set is small
def validate_local_government_code(code: str) -> str:
    if not _LG_CODE.fullmatch(code):
        raise CodeError("not a local government code: expected 6 digits")
    prefecture = int(code[:2])
    if not 1 <= prefecture <= 47:
        raise CodeError("prefecture (first two digits) must be 01 to 47")
    expected = lg_check_digit(code[:5])
    if int(code[5]) != expected:
        raise CodeError("check digit (sixth digit) does not match the first five")
    return code


def require_ascii_digits(value: str, what: str) -> str:
    """P1 (``domain.provenance``): codes are ASCII digits. A full-width ``１３０１`` spells the same office
    differently and would silently fork a person's records, so it is refused, not normalised."""
    if not value.isascii():
        raise CodeError(f"{what} must be ASCII digits (full-width or other digits are refused)")
    return value
