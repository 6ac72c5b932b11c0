"""Rejections people can act on: which field broke which rule, never with what value.

A ``FieldError`` has two faces. The submitting client sees ``message`` (field and rule, e.g.
``authority: check digit (sixth digit) does not match the first five``). Operators, logs and metrics see
only ``operator_rule`` (field and rule class, e.g. ``authority: check digit``).

Neither carries the value: a rejected value may be a person's name, a 1 MB string or a forged control
sequence, and a refusal is read by more than its sender (proxies, logs, the console, the portal). The
rules' own texts name no value (``domain.codes``, ``domain.calendar``, the contracts); ``for_client``
also drops a rule that repeats its value, as a last guard for a rule written later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from contracts.types import PRINTABLE_PATTERN
from domain.calendar import MONTH_PATTERN, DateFormatError, parse_month

# Phrases from the domain validators (codes, calendar, occupation, contracts) that name a rule class;
# the first one found in a value error's message classifies it.
_RULE_PHRASES = (
    "check digit",
    "expected 6 digits",
    "prefecture",
    "not a real date",
    "before",
    "after",
    "era years",
    "is not a date",
    "is not run by authority",
    "major group",
    "classification version",
    "must be unique",
    "needs at least one",
    "carries no scopes",
    "needs left_on",
    "takes no left_on",
    "must be 4 digits",
)
_SAFE_FIELD = re.compile(r"[^A-Za-z0-9_.\[\]()]")

# An answer is bounded whatever the input: a rule's text at most this long, a field's name (an unknown
# field is named as sent) too, and a request's error list at most this many entries.
MAX_RULE_CHARS = 1000
MAX_FIELD_CHARS = 200
MAX_ERRORS = 100
UNKNOWN_FIELD = "(unknown field)"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _echoes(rule: str, value: Any) -> bool:
    """Whether ``rule`` repeats ``value`` (a string of a few characters or more, or its repr)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return isinstance(value, str) and len(value) >= 3 and (value in rule or repr(value) in rule)


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    rule: str
    value: Any = None
    rule_class: str = "invalid"
    label: str | None = None  # the column as the file's header names it, for batch files

    @property
    def message(self) -> str:
        where = f"{self.label} ({self.field})" if self.label and self.label != self.field else self.field
        return f"{where}: {self.rule}"

    @property
    def operator_rule(self) -> str:
        # An unknown field's name is the client's own text (it may be a person's name, and 10,000 of them
        # would be 10,000 rules): operators see only that a field was unknown. Known fields' names come
        # from the contract; keep only schema-like characters there too, as a last guard.
        if self.rule_class == "extra_forbidden":
            return f"{UNKNOWN_FIELD}: {self.rule_class}"
        field = _SAFE_FIELD.sub("?", self.field)[:80]
        return f"{field}: {self.rule_class}"

    def for_client(self) -> dict[str, Any]:
        shown = self
        if _echoes(self.rule, self.value):
            shown = FieldError(self.field, self.rule_class, None, self.rule_class, self.label)
        out = {
            "field": clip(shown.field, MAX_FIELD_CHARS),
            "rule": clip(shown.rule, MAX_RULE_CHARS),
            "message": clip(shown.message, MAX_FIELD_CHARS + MAX_RULE_CHARS),
        }
        if self.label is not None:
            out["column"] = clip(self.label, MAX_FIELD_CHARS)
        return out


def client_errors(errors: Sequence[FieldError]) -> dict[str, Any]:
    """The body of a 422: the first ``MAX_ERRORS`` errors, and how many there were in all."""
    shown = [e.for_client() for e in errors[:MAX_ERRORS]]
    body: dict[str, Any] = {"errors": shown}
    if len(errors) > MAX_ERRORS:
        body["errors_total"] = len(errors)
        body["errors_shown"] = MAX_ERRORS
    return body


CONTROL_CHARACTERS = (
    "must not contain control characters (U+0000 to U+001F other than tab, LF and CR; U+007F)"
)


def dotted(loc: tuple[int | str, ...]) -> str:
    """``("attributes", 0)`` -> ``attributes[0]``; the empty location is the whole event."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(event)"


def field_of(loc: tuple[int | str, ...], error_type: str) -> str:
    """The field an error names. An unknown field is named by where it was (``personal``, ``(event)``),
    not by its name: that name is the client's own text, and may be anything."""
    return dotted(loc[:-1] if error_type == "extra_forbidden" else loc)


def rule_class(error_type: str, message: str) -> str:
    if error_type in ("value_error", "assertion_error"):
        for phrase in _RULE_PHRASES:
            if phrase in message:
                return phrase
        return "invalid value"
    return error_type


def from_request_errors(errors: Sequence[Mapping[str, Any]]) -> list[FieldError]:
    """The errors of a request the web framework refused (FastAPI's ``RequestValidationError.errors()``),
    for ``client_errors``: the JSON APIs' 422 and the portal's error page alike. A parameter refused by
    one of the hub's own patterns is told the rule in words (a month: which of ``parse_month``'s rules it
    broke), not the pattern's regular expression."""
    out = []
    for e in errors:
        kind, rule = e.get("type", ""), str(e.get("msg", "invalid"))
        if kind == "string_pattern_mismatch":
            kind, rule = _pattern_rule(e.get("ctx", {}).get("pattern"), e.get("input"), kind, rule)
        out.append(
            FieldError(field_of(tuple(e.get("loc", ())), e.get("type", "")), rule, e.get("input"), kind)
        )
    return out


def _pattern_rule(pattern: Any, value: Any, kind: str, rule: str) -> tuple[str, str]:
    """(rule class, rule) for a value a pattern refused: the hub's patterns by their rules' own texts."""
    if pattern == PRINTABLE_PATTERN:
        return "control character", CONTROL_CHARACTERS
    if pattern == MONTH_PATTERN:
        try:
            parse_month(value if isinstance(value, str) else "")
        except DateFormatError as exc:
            return "month", str(exc)
        return "month", "is not a month: expected YYYY-MM in ASCII digits, e.g. 2025-04"
    return kind, rule


def from_validation_error(exc: ValidationError, *, prefix: tuple[int | str, ...] = ()) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not in the contract; rejected rather than dropped)"
        elif err["type"] == "string_pattern_mismatch":
            kind, msg = _pattern_rule(err.get("ctx", {}).get("pattern"), err.get("input"), err["type"], msg)
            err = {**err, "type": kind}
        value = err.get("input")
        if err["type"] == "missing" or isinstance(value, dict):
            value = None
        errors.append(
            FieldError(
                field=field_of((*prefix, *err["loc"]), err["type"]),
                rule=msg,
                value=value,
                rule_class=rule_class(err["type"], msg),
            )
        )
    return errors
