"""OpenAPI-driven fuzzing of every HTTP service with schemathesis, with all its checks.

Each operation of the welfare and employment adapters, the shared view, the feed API and the console's
API gets schema-valid (positive) and schema-violating (negative) requests from its own OpenAPI, with a
real credential, against the real stack. Every answer must pass every schemathesis check: no 5xx, only
documented statuses, content types and bodies as documented, valid data accepted, invalid data refused,
405 for methods not served, 401 without the credential. And one check of the hub's own: a refusal (4xx)
never repeats a value it was sent (``echoed``). Bounded: ``EXAMPLES`` per operation and mode.

Figures (inputs tried, statuses, 5xx, largest body) are printed per service (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.specs.openapi.checks import positive_data_acceptance

from consumers.feed.api import create_feed_app
from consumers.shared_view.api import build_app as shared_view_app
from contracts.types import BIRTH_DATE_RULE, DAY_RULE, INSTANT_RULE
from hub.console.app import create_console_app
from infra.config import Settings
from producers.adapters.app import employment_app, welfare_app
from tests.fuzz.rules import obey
from tests.helpers import three_clients
from tests.servers import serving

# Per operation and mode: ~500 requests over five services in CI; HUB_FUZZ_EXAMPLES=40 for a longer hunt.
EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "8"))


@dataclass
class Figures:
    inputs: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    largest: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self, service: str) -> str:
        server_errors = sum(n for s, n in self.statuses.items() if s >= 500)
        return (
            f"fuzz {service}: {self.inputs} inputs, 5xx {server_errors}, largest body {self.largest} bytes, "
            f"statuses {dict(sorted(self.statuses.items()))}, check failures {len(self.failures)}"
        )


def map_case(context: Any, case: Any) -> Any:
    """Positive cases obey the rules JSON Schema cannot say (``tests.fuzz.rules``)."""
    if case.meta is not None and case.meta.generation.mode.is_positive and case.body is not None:
        case.body = obey(case.body)
    return case


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


# The hub's rules name the bounds of their ranges ("must lie in 2000-01-01 .. 2099-12-31"): a bound sent as
# a value elsewhere in the request is the rule's own text in the answer, not the value repeated.
RULE_TEXTS = " ".join((DAY_RULE, INSTANT_RULE, BIRTH_DATE_RULE))


def echoed(case: Any, answer: str, spec: str) -> list[str]:
    """The values of ``case`` a refusal repeats: strings of 8 characters or more sent in its path, query
    or body, other than those the OpenAPI description itself holds (an enum's members, a field's name) or
    a rule's own text does (``RULE_TEXTS``)."""
    sent = (case.path_parameters, case.query, case.body)
    return sorted(
        {
            s
            for s in _strings(sent)
            if len(s.strip()) >= 8 and s not in spec and s not in RULE_TEXTS and s in answer
        }
    )


def fuzz(app: FastAPI, token: str) -> Figures:
    """Every operation of ``app``'s OpenAPI, positive and negative, every check."""
    load_all_checks()
    figures = Figures()
    with serving(app) as url:
        with urllib.request.urlopen(f"{url}/openapi.json") as answer:
            spec = answer.read().decode()
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        schema.hook(map_case)
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]
            if operation.path in ("/healthz", "/readyz"):
                # Probes take no input, and /readyz answers 503 by design while a dependency is down
                # (process-wide: an earlier test's consumer may have reported one).
                continue
            excluded: list[Callable[..., Any]] = []
            if operation.path.endswith("/csv"):
                # A CSV file's columns and cells are not something OpenAPI describes (it is a binary
                # part); the reader has its own property tests (test_fuzz_codecs).
                excluded.append(positive_data_acceptance)
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                _fuzz_operation(operation, mode, url, token, excluded, figures, spec)
    return figures


def _fuzz_operation(
    operation: Any,
    mode: schemathesis.GenerationMode,
    url: str,
    token: str,
    excluded: list[Callable[..., Any]],
    figures: Figures,
    spec: str,
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    checks = CHECKS.get_all()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        figures.inputs += 1
        response = case.call(base_url=url, headers=auth)
        figures.statuses[response.status_code] += 1
        figures.largest = max(figures.largest, len(response.content))
        try:
            case.validate_response(response, checks=checks, excluded_checks=excluded, headers=auth)
        except BaseException as exc:  # every check's failure is collected and reported by the test
            figures.failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
        if 400 <= response.status_code < 500 and (repeated := echoed(case, response.text, spec)):
            figures.failures.append(f"{operation.label} [{mode.value}]: a refusal echoes {repeated[:3]!r}")

    try:
        run()
    except BaseException as exc:
        if "Unsatisfiable" not in type(exc).__name__:  # nothing to generate (e.g. /healthz)
            raise


@pytest.fixture(scope="module")
async def tokens(pool: asyncpg.Pool) -> dict[str, str]:
    return await three_clients(pool, "fuzz")


SERVICES: dict[str, tuple[Callable[[Settings], FastAPI], str]] = {
    "employment adapter": (employment_app, "national"),
    "welfare adapter": (lambda s: welfare_app(s, relay=False), "authority"),
    "shared view": (shared_view_app, "authority"),
    "feed API": (create_feed_app, "authority"),
    "console API": (
        lambda s: create_console_app(s.model_copy(update={"console_session_secret": "fuzz"}), sample=False),
        "operator",
    ),
}


@pytest.mark.parametrize("service", list(SERVICES))
async def test_schemathesis_finds_nothing(service: str, tokens: dict[str, str], settings: Settings) -> None:
    make, who = SERVICES[service]
    figures = await asyncio.to_thread(fuzz, make(settings), tokens[who])
    print(figures.line(service))
    assert figures.inputs > 0
    if "adapter" in service:  # valid events reach acceptance (a fuzz answered only 403 tests nothing past it)
        assert figures.statuses[202] > 0, figures.line(service)
    assert not [s for s in figures.statuses if s >= 500], figures.line(service)
    assert not figures.failures, "\n\n".join(figures.failures[:8])
