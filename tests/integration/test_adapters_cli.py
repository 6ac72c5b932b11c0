"""``hub clients``, ``hub sites`` and ``hub import`` against the test database, as an operator runs them."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg
from typer.testing import CliRunner

from hub.cli import app

runner = CliRunner()


def _file(tmp_path: Path, pks: list[str]) -> Path:
    lines = ["送り込みID,個人キー,自治体コード,拠点ID,支援事業,送り込み日,ケース番号"]
    for i, pk in enumerate(pks):
        when = "令和7年4月31日" if i == len(pks) - 1 else f"令和7年4月{i + 1}日"  # the last row is broken
        lines.append(f"{uuid.uuid4().hex},{pk},122041,122041-05,一般,{when},K-{i}")
    path = tmp_path / "送り込み.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp932"))
    return path


def test_clients_sites_and_import(pool: asyncpg.Pool, tmp_path: Path) -> None:
    added = runner.invoke(app, ["clients", "add", "CLI Funabashi", "--kind", "authority", "--code", "122041"])
    assert added.exit_code == 0, added.output
    token = added.output.strip().splitlines()[-1]
    client_id = re.search(r"client (\w+) \(authority:122041", added.output)[1]  # type: ignore[index]
    bad = runner.invoke(app, ["clients", "add", "x", "--kind", "authority", "--code", "131042"])
    assert bad.exit_code == 2 and "check digit (sixth digit) does not match" in bad.output
    full_width = runner.invoke(app, ["clients", "add", "x", "--kind", "office", "--code", "１２０５"])
    assert full_width.exit_code == 2 and "expected 4 ASCII digits" in full_width.output  # P1

    # An authority no other test streams for: a site registered now joins the layout of its authority's
    # feeds, old months included, and the feed tests' revisions would change with it.
    site = runner.invoke(app, ["sites", "add", "122041-05", "--office", "1205", "--name", "船橋 05"])
    assert site.exit_code == 0 and "authority 122041, office 1205" in site.output
    assert "122041-05" in runner.invoke(app, ["sites", "list"]).output
    wrong = runner.invoke(app, ["sites", "add", "122041-5", "--office", "1205"])
    assert wrong.exit_code == 2 and "expected <local government code>-<two digits>" in wrong.output

    path = _file(tmp_path, [uuid.uuid4().hex for _ in range(6)])
    first = runner.invoke(app, ["import", str(path), "--family", "referral", "--token", token])
    assert first.exit_code == 1, first.output  # 1: some rows were rejected
    assert "6 rows (cp932): 5 accepted, 0 already imported, 1 rejected" in first.output
    assert "line 7: 送り込み日 (referred_on): not a real date" in first.output
    again = runner.invoke(app, ["import", str(path), "--family", "referral", "--token", token, "--no-wait"])
    assert "0 accepted, 5 already imported, 1 rejected" in again.output
    other = runner.invoke(app, ["import", str(path), "--family", "placement", "--token", token])
    assert other.exit_code == 2 and "the welfare adapter does not take placement events" in other.output

    assert runner.invoke(app, ["clients", "revoke", client_id]).exit_code == 0
    revoked = runner.invoke(app, ["import", str(path), "--family", "referral", "--token", token])
    assert revoked.exit_code == 2 and f"credentials of client {client_id} were revoked" in revoked.output
    assert runner.invoke(app, ["clients", "revoke", client_id]).exit_code == 1
