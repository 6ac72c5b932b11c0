"""The checks' memos of passed values hold no personal data.

``contracts.wire._compile_checks`` remembers text values with validators of their own that passed
(``seen{i}``, up to 8192 per field), and the adapters judge the personal block with
``wire.checked_struct(RegistrationPersonal)``: the adapter process kept the clear 求職番号 of the last 8192
people it accepted, past their erasure (the erasure follower forgets data keys only). The contract's own
check of a 求職番号 was an ``lru_cache`` of 16384 of them. Now neither remembers a personal value.
"""

from __future__ import annotations

from typing import Any

from contracts import types, wire
from contracts.envelope import PERSONAL_MODELS, Family
from contracts.events import RegistrationPersonal
from producers.adapters.csv_chunks import FamilyRows
from tests import factories


def _memo_contents(checks: Any) -> set[str]:
    return {
        v for name, memo in checks.__globals__.items() if name.startswith(("seen", "passed")) for v in memo
    }


def test_a_judged_body_leaves_no_personal_value_in_the_checks_memo() -> None:
    judge = FamilyRows(Family.REGISTRATION)
    submission = factories.registration(factories.person_key())
    personal = submission.data["personal"]
    assert personal.get("job_seeker_number"), "control: the factory's registration carries a 求職番号"
    row = judge.judge_body(submission.data)
    assert not isinstance(row, list)
    assert judge.personal is not None
    _, personal_checks = judge.personal
    assert personal_checks is not None
    leaked = _memo_contents(personal_checks) & {str(v) for v in personal.values()}
    assert not leaked, "personal values kept in process memory by the wire checks' memo"


def test_every_personal_block_is_judged_without_a_memo() -> None:
    assert set(PERSONAL_MODELS.values()) <= wire._PERSONAL
    for model in wire._PERSONAL:
        _, checks = wire.checked_struct(model)
        if checks is not None:
            assert not [n for n in checks.__globals__ if n.startswith(("seen", "passed"))], model


def test_the_contracts_check_of_a_job_seeker_number_keeps_no_cache() -> None:
    """Every check a 求職番号 goes through on the pydantic path: none is a cache (the local government
    code's is, and rightly: ~1,800 public codes)."""
    from domain import codes

    RegistrationPersonal.model_validate(
        {"name": "x", "birth_date": "1990-01-01", "job_seeker_number": "13010-12345678"}
    )
    for check in (types._ascii_job_seeker_number, codes.require_ascii_digits):
        assert not hasattr(check, "cache_info"), check


def test_a_files_personal_columns_are_converted_without_a_memo() -> None:
    """A file's date cells are remembered per column for the whole import (4,096 of them): a birth date
    column's are not, nor any other personal column's. The memo of a non-personal date column is the
    control: the check would see one."""
    from infra.codecs import csv_rows
    from infra.codecs.csv_columns import COLUMNS

    seen_personal = seen_control = 0
    for family, layout in COLUMNS.items():
        header = csv_rows.Header(tuple(layout), tuple(c.en for c in layout))
        for cells in header.plan:
            if cells.column.personal:
                seen_personal += 1
                assert cells.seen is None, cells.column.en
            elif cells.column.kind is csv_rows.Kind.DATE:
                seen_control += 1
                assert cells.seen is not None, (family, cells.column.en)
    assert seen_personal and seen_control
