"""Advisory lock keys: one registry, and the SQL that names a key as a literal names a registered one."""

from __future__ import annotations

import re
from pathlib import Path

from infra.db import AdvisoryLock

ROOT = Path(__file__).resolve().parents[2]


def test_the_keys_the_migrations_take_are_the_registered_ones() -> None:
    literals = {
        int(key)
        for sql in (ROOT / "infra" / "migrations").glob("*.sql")
        for key in re.findall(r"pg_advisory\w*\(([0-9]+)\)", sql.read_text(encoding="utf-8"))
    }
    assert literals, "migration 020 takes the acceptance erasure lock by its key"
    assert literals <= {int(k) for k in AdvisoryLock}
    assert AdvisoryLock.ACCEPTANCE_ERASURE in literals


def test_no_module_takes_a_key_outside_the_registry() -> None:
    """A key written as a number anywhere else could repeat one of the registry's unseen."""
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("infra", "producers", "consumers", "hub", "devtools", "domain", "contracts")
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "infra" / "db.py"
        and re.search(r"\b7_?20[0-9]_?[0-9]{3}\b", path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
