"""A mixed file of good and hostile rows imported through the adapter's batch path: what is accepted, what
is refused (line, column, rule) and what enters the outbox are pinned by a golden file, so a faster
importer accepts exactly what the old one did. Ciphertexts, event ids and times are random or of the
moment: the golden holds the personal block as it opens, and the rest of every payload as written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from contracts.envelope import Family
from contracts.events import Sealed
from infra.auth import OrgKind, Principal, Role, add_client, authenticate
from infra.config import Settings
from infra.crypto import KeyStore, open_sealed
from producers.adapters.authorization import Adapter
from producers.adapters.service import AdapterService
from producers.adapters.sites import add_sites
from tests import factories

GOLDEN = Path(__file__).parent / "golden" / "csv_import.json"
HEADER = "就職ID,個人キー,安定所コード,拠点ID,就職日,就職経路,職業,職業分類版,雇用形態,性別,年齢階級,属性,外国人,事業所名,事業所所在地"
OTHER_SITE = "112038-01"


def _pk(i: int) -> str:
    return f"{i:032x}"


def _row(i: int, **over: str) -> str:
    cells = {
        "id": f"{0xA000 + i:032x}",
        "pk": _pk(i),
        "office": factories.OFFICE,
        "site": factories.SITE,
        "placed_on": "R7.5.12",
        "route": "紹介就職",
        "group": "08",
        "version": "MHLW-2022",
        "type": "part_time",
        "sex": "female",
        "age": "35-39",
        "attrs": "public_assistance",
        "foreign": "",
        "employer": f"株式会社𠮷野ケアサービス{i}",
        "address": "",
    }
    cells.update(over)
    return ",".join(cells.values())


def _file(erased: str) -> bytes:
    lines = [HEADER]
    for i in range(1, 9):
        lines.append(_row(i))
    lines += [
        _row(20, employer="株式会社\x00ヌル"),  # NUL in a personal cell
        _row(21, group="０８"),  # full-width digits in a code (NFKC makes them ASCII)
        _row(22, employer="=HYPERLINK(1)"),  # formulas
        _row(23, employer="+81 3"),
        _row(24, employer="-1"),
        _row(25, employer="@SUM(A1)"),
        _row(26, placed_on="2024-02-30"),  # forged dates
        _row(27, placed_on="R7.2.30"),
        _row(28, placed_on="2025-13-01"),
        _row(29, site=OTHER_SITE),  # another site's code
        _row(30, office="1102"),
        _row(31, pk="1" * 31),  # not a person key
        _row(32, pk="Ｆ" * 32),
        _row(33, group="99"),
        _row(34, route="=1+1"),
        _row(35, sex="2147483648"),
        _row(36, attrs="public_assistance;２１４７４８３６４８"),
        _row(37, foreign="2147483648"),
        _row(38, foreign="はい"),
        _row(39, age="３５-３９"),
        _row(40, employer="x" * 100_000),  # long, under the csv module's cell limit
        _row(41, pk=erased),  # P9: on the erasure register
        _row(3),  # the same row again: a duplicate
        _row(42, extra="too,many"),  # cell count
        "short,row",
        _row(43, id="=cmd|' /C calc'!A0"),
        _row(44, placed_on="令和7年5月12日"),
        _row(45, placed_on="２０２５－０５－１２"),
        _row(46, version=""),
        _row(47, employer=""),
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def _shape(value: bytes, keys: dict[str, bytes], pk: str) -> Any:
    data = orjson.loads(value)
    personal = data.get("personal")
    if isinstance(personal, dict) and "ct" in personal:
        data["personal"] = {
            "kid": personal["kid"],
            "opens_to": open_sealed(keys[pk], pk, Sealed.model_validate(personal)),
        }
    return data


def _json(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


async def snapshot(pool: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
    """Import the mixed file as the office's client; the summary and the outbox rows it wrote."""
    erased = "e" * 32
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "golden"), (OTHER_SITE, "1102", "other")])
        _, token = await add_client(
            conn, name="golden", org_kind=OrgKind.OFFICE, org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO sv_erasures (person_key, requested_by) VALUES ($1, 'test') ON CONFLICT DO NOTHING",
            erased,
        )
        principal: Principal = await authenticate(conn, f"Bearer {token}")
        start = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    keystore = KeyStore.from_settings(settings)
    service = AdapterService(Adapter.EMPLOYMENT, settings, pool, keystore)
    summary = await service.import_csv(principal, Family.PLACEMENT, _file(erased))
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT topic, key, headers, value, origin FROM outbox WHERE id > $1 ORDER BY id", start
        )
        people = sorted({bytes(r["key"]).decode() for r in rows})
        keys = await keystore.keys_for(conn, people)
    ns = settings.topic_namespace
    outbox = [
        {
            "topic": r["topic"].replace(ns, "<ns>"),
            "key": bytes(r["key"]).decode(),
            "headers": {h: v for h, v in _json(r["headers"]).items() if h not in {"ce_id", "ce_time"}},
            "value": _shape(bytes(r["value"]), keys, bytes(r["key"]).decode()),
            "origin": r["origin"],
        }
        for r in rows
    ]
    # The client id is random per run: the golden names it <client>.
    shown = orjson.dumps({"summary": summary.as_dict(), "outbox": outbox}).decode()
    return orjson.loads(shown.replace(principal.client_id, "<client>"))


async def test_a_mixed_file_is_accepted_and_refused_exactly_as_the_golden_says(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    got = await snapshot(pool, settings)
    if os.environ.get("HUB_WRITE_GOLDEN"):  # regenerate deliberately, then review the diff
        GOLDEN.write_text(json.dumps(got, ensure_ascii=False, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())
