from __future__ import annotations

import pytest

from domain.occupation import (
    CLASSIFICATION_VERSION,
    OCCUPATION_GROUPS,
    OccupationError,
    validate_occupation_group,
)


def test_fifteen_major_groups() -> None:
    assert list(OCCUPATION_GROUPS) == [f"{i:02d}" for i in range(1, 16)]
    assert OCCUPATION_GROUPS["01"].name_ja == "管理的職業"
    assert OCCUPATION_GROUPS["08"].name_ja == "福祉・介護の職業"
    assert OCCUPATION_GROUPS["15"].name_ja == "運搬・清掃・包装・選別等の職業"
    assert OCCUPATION_GROUPS["09"].name_en == "Service occupations"
    assert all(g.code == code and g.name_en for code, g in OCCUPATION_GROUPS.items())


def test_groups_are_read_only() -> None:
    with pytest.raises(TypeError):
        OCCUPATION_GROUPS["16"] = OCCUPATION_GROUPS["01"]  # type: ignore[index]


@pytest.mark.parametrize(("code", "expected"), [("01", "01"), ("15", "15"), ("０９", "09"), (" 12 ", "12")])
def test_valid_codes(code: str, expected: str) -> None:
    assert validate_occupation_group(code, CLASSIFICATION_VERSION) == expected


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("16", "major group does not exist in MHLW-2022"),
        ("00", "major group does not exist"),
        ("1", "expected two digits 01 to 15"),
        ("A", "expected two digits"),
        ("091", "expected two digits"),
    ],
)
def test_invalid_codes(code: str, message: str) -> None:
    with pytest.raises(OccupationError, match=message):
        validate_occupation_group(code, CLASSIFICATION_VERSION)


def test_unsupported_version() -> None:
    with pytest.raises(OccupationError, match="version is not supported"):
        validate_occupation_group("01", "MHLW-2011")
