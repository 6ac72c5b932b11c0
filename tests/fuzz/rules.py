"""The contract rules JSON Schema cannot say, applied to generated *valid* events.

A schema-valid event the adapters refuse is a failure of ``positive_data_acceptance`` unless the rule it
breaks is one JSON Schema has no words for: a local government code's check digit, a site that belongs
to the event's authority, an office recipient's code being 4 digits where an authority's is 6, a
withdrawal carrying no scopes, ``left_on`` only with ``left``, ``valid_until`` not before
``valid_from``, an instant lying in 2000–2099 (``contracts.types.Timestamp``: a ``date-time`` has no
minimum in JSON Schema), an integer written as one (``149``: JSON Schema counts ``149.0`` an integer, the
contract reads numbers strictly). The fuzzers make positive cases obey exactly these (the same rules ``domain.codes`` and
``contracts.events`` enforce), so every other refusal of valid data is a finding. Negative cases are
left alone. Valid events are also placed at the fuzz clients' own registered site, authority and office:
who may publish where is the registry's state (P2), not the schema's, and without it every valid event
was a 403 that never reached validation, sealing or the outbox.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contracts.types import in_supported_range
from domain.codes import lg_check_digit
from tests.factories import AUTHORITY, OFFICE, SITE


def valid_code(code: str) -> str:
    """A real-looking local government code from any 6 digits: prefecture 01–47 and its check digit."""
    prefecture = int(code[:2]) % 47 + 1
    first5 = f"{prefecture:02d}{code[2:5]}"
    return first5 + str(lg_check_digit(first5))


def obey(body: Any) -> Any:
    """``body`` (an event, or a batch of them) with the unsayable rules obeyed, at the fuzz clients' own
    registered site (who may publish where is the registry's state, not the schema's: without this every
    valid event is a 403 and the fuzz never reaches acceptance)."""
    if isinstance(body, list):
        return [obey(item) for item in body]
    if not isinstance(body, dict):
        return body
    out = dict(body)
    if isinstance(out.get("authority"), str):
        out["authority"] = AUTHORITY
    if isinstance(out.get("site"), str):
        out["site"] = SITE
    if isinstance(out.get("office"), str):
        out["office"] = OFFICE
    captured = out.get("captured")
    if isinstance(captured, dict) and isinstance(captured.get("site"), str):
        out["captured"] = {**captured, "site": SITE}
    if isinstance(out.get("recipients"), list):
        out["recipients"] = [_recipient(r) for r in out["recipients"]]
    if "action" in out and "scopes" in out:
        if out["action"] == "withdrawn":
            out["scopes"] = []
        else:
            out["scopes"] = out["scopes"] or ["share_registration"]
            out["recipients"] = out.get("recipients") or [{"kind": "office", "code": "1301"}]
    until, since = out.get("valid_until"), out.get("valid_from")
    if isinstance(until, str) and isinstance(since, str) and until < since:
        out["valid_until"] = since
    team, referred = out.get("team_support_from"), out.get("referred_on")
    if isinstance(team, str) and isinstance(referred, str) and team < referred:
        out["team_support_from"] = referred  # the case conference follows the referral
    if out.get("status") == "left" and "checked_on" in out:
        if out.get("left_on") is None:  # absent or null
            out["left_on"] = out["checked_on"]
    elif out.get("status") == "employed":
        out.pop("left_on", None)
    return _instants_in_range(_whole_numbers(out))


def _whole_numbers(value: Any) -> Any:
    """``value`` with every number without a fraction written as an integer (``149.0`` as ``149``)."""
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _instants_in_range(value: Any) -> Any:
    """``value`` with every aware date-time outside the supported range moved to a year 2004–2007 of the
    same leap-ness (29 February stays a date), as written otherwise; dates and other text untouched."""
    if isinstance(value, dict):
        return {k: _instants_in_range(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_instants_in_range(v) for v in value]
    if isinstance(value, str) and len(value) > 10 and value[10] in "Tt":
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            return value
        if instant.tzinfo is not None and not in_supported_range(instant) and value[:4].isdigit():
            return f"{2004 + int(value[:4]) % 4}{value[4:]}"
    return value


def _recipient(r: Any) -> Any:
    if not isinstance(r, dict) or not isinstance(r.get("code"), str):
        return r
    digits = r["code"]
    if r.get("kind") == "authority":
        return {**r, "code": valid_code((digits * 6)[:6])}
    return {**r, "code": (digits * 4)[:4]}
