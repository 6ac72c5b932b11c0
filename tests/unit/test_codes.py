"""Local government codes (全国地方公共団体コード, JIS X 0402): prefecture range and check digit (DOMAIN.md)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.codes import CodeError, lg_check_digit, validate_local_government_code


def with_check_digit(first_five: str) -> str:
    return first_five + str(lg_check_digit(first_five))


@pytest.mark.parametrize(
    ("first_five", "check"),
    [
        ("13104", 1),  # Shinjuku: sum 33, r = 0, 11 − 0 = 11 → last digit 1
        ("11203", 8),  # Kawaguchi: sum 25, r = 3 → 8
        ("33208", 9),  # Soja: sum 57, r = 2 → 9
        ("09201", 1),  # Utsunomiya: sum 55, r = 0 → 1
        ("14100", 3),  # Yokohama: sum 30, r = 8 → 3
        ("01000", 6),  # sum 5 (only the weight-5 digit counts), r = 5 → 6
        ("00006", 0),  # sum 12, r = 1 → 11 − 1 = 10 → last digit 0
        ("00005", 1),  # sum 10, r = 10 → 1
        ("00000", 1),  # sum 0, r = 0 → 11 → last digit 1
    ],
)
def test_check_digit_is_the_last_digit_of_eleven_minus_the_weighted_remainder(
    first_five: str, check: int
) -> None:
    assert lg_check_digit(first_five) == check


@pytest.mark.parametrize("prefix", ["1310", "131041"])
def test_check_digit_needs_exactly_five_digits(prefix: str) -> None:
    with pytest.raises(ValueError, match="zip"):
        lg_check_digit(prefix)


@pytest.mark.parametrize("code", ["131041", "112038", "332089", "092011", "141003"])
def test_real_local_government_codes_pass(code: str) -> None:
    assert validate_local_government_code(code) == code


@pytest.mark.parametrize("prefecture", ["01", "13", "47"])
def test_prefectures_01_to_47_are_accepted(prefecture: str) -> None:
    code = with_check_digit(prefecture + "100")
    assert validate_local_government_code(code) == code


@pytest.mark.parametrize("prefecture", ["00", "48", "99"])
def test_prefectures_outside_01_to_47_are_refused(prefecture: str) -> None:
    code = with_check_digit(prefecture + "100")  # a correct check digit: the prefecture alone is wrong
    with pytest.raises(CodeError) as err:
        validate_local_government_code(code)
    assert str(err.value) == "prefecture (first two digits) must be 01 to 47"


@pytest.mark.parametrize("code", ["112039", "131040", "131042"])
def test_a_wrong_check_digit_is_named_never_the_value(code: str) -> None:
    with pytest.raises(CodeError) as err:
        validate_local_government_code(code)
    assert str(err.value) == "check digit (sixth digit) does not match the first five"


@pytest.mark.parametrize(
    "code",
    [
        "13104",  # five digits
        "1310411",  # seven digits
        "13104a",
        " 131041",
        "",
        "１３１０４１",  # full-width digits: not the ASCII code the systems exchange
        "١٣١٠٤١",  # Arabic-Indic digits are Unicode digits too
    ],
)
def test_anything_but_six_ascii_digits_is_refused(code: str) -> None:
    with pytest.raises(CodeError) as err:
        validate_local_government_code(code)
    assert str(err.value) == "not a local government code: expected 6 digits"


@given(
    prefecture=st.integers(min_value=1, max_value=47),
    municipality=st.integers(min_value=0, max_value=999),
    check=st.integers(min_value=0, max_value=9),
)
def test_exactly_one_check_digit_completes_each_code(prefecture: int, municipality: int, check: int) -> None:
    first_five = f"{prefecture:02d}{municipality:03d}"
    code = f"{first_five}{check}"
    if check == lg_check_digit(first_five):
        assert validate_local_government_code(code) == code
    else:
        with pytest.raises(CodeError, match="check digit"):
            validate_local_government_code(code)
