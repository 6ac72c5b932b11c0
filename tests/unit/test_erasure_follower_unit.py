"""The erasure follower outlives a record it cannot read, whatever the error (its task has no supervisor:
a follower that stopped would leave every later erased person's key in the process's memory)."""

from __future__ import annotations

import pytest

from infra import erasure_follower
from infra.config import Settings


def test_an_unforeseen_error_on_one_record_skips_that_record_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object) -> None:
        raise RuntimeError("a decoder bug")

    monkeypatch.setattr(erasure_follower, "decode", boom)
    follower = erasure_follower.ErasureFollower(Settings())
    follower._apply(b"k", [], b"{}")
    assert follower.unreadable == 1 and follower.forgotten == 0
