"""What a client system submits, and how it becomes an event: the validate and seal steps of acceptance
(``producers.ingest`` runs them in order, with authorise before seal and enqueue after).

A submission's data is plain JSON-like values with the personal fields in clear under ``"personal"``.
``validate`` checks it once, against the family's contract with the personal block's own model in place of
the sealed one, so the rules and field paths are the contract's; ``seal_checked`` seals the clear block with
the person's data key; ``build_event`` makes the contract's event from both. A ``Submission`` (the
simulator's unit, with its source, time and event id) goes through the same steps (``to_event``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ValidationError, create_model

from contracts.envelope import MODELS, PERSONAL_MODELS, Event, Family, event_type, new_event_id
from contracts.events import built
from infra.codecs.field_errors import FieldError, from_validation_error
from infra.crypto import seal

ExtraPolicy = Literal["forbid", "ignore"]


@dataclass(frozen=True, slots=True)
class Submission:
    family: Family
    source: str
    time: datetime
    data: dict[str, Any]
    event_id: str = field(default_factory=new_event_id)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "family": self.family.value,
                "source": self.source,
                "time": self.time.isoformat(),
                "event_id": self.event_id,
                "data": self.data,
            }
        )

    @classmethod
    def from_json(cls, line: bytes | str) -> Submission:
        raw = orjson.loads(line)
        return cls(
            family=Family(raw["family"]),
            source=raw["source"],
            time=datetime.fromisoformat(raw["time"]),
            data=raw["data"],
            event_id=raw["event_id"],
        )

    @property
    def person_key(self) -> str:
        return str(self.data.get("person_key", ""))


def _input_model(family: Family) -> type[BaseModel]:
    """The family's contract with ``personal`` in clear: the contract's fields and validators, with the
    personal block's model where the contract has the sealed one (optional where the contract's is)."""
    contract = MODELS[family]
    personal = PERSONAL_MODELS.get(family)
    if personal is None:
        return contract
    sealed_field = contract.model_fields["personal"]
    annotation: Any = personal if sealed_field.is_required() else personal | None
    default: Any = ... if sealed_field.is_required() else None
    model: type[BaseModel] = create_model(
        contract.__name__, __base__=contract, personal=(annotation, default)
    )
    return model


_INPUT_MODELS: dict[Family, type[BaseModel]] = {f: _input_model(f) for f in Family}


@dataclass(frozen=True, slots=True)
class Checked:
    """A validated submission, personal fields (if any) still in clear: it never leaves the producer."""

    family: Family
    data: BaseModel  # the validated input
    personal: dict[str, Any] | None  # the validated clear personal fields, to seal under the person's key
    subject: str
    time: datetime
    event_id: str


def validate(
    family: Family,
    body: dict[str, Any],
    *,
    extra: ExtraPolicy = "forbid",
    time: datetime | None = None,
    event_id: str | None = None,
    trusted: bool = False,
) -> Checked:
    """Validate once, against the contract with the personal block in clear (same rules, same field paths).
    Only a ``trusted`` caller (the simulator's files, tests) may hand in a block sealed already, checked as
    the contract's; from outside, a sealed block is refused like any unknown field. Raises
    ``pydantic.ValidationError``."""
    personal = body.get("personal")
    sealed_already = trusted and isinstance(personal, dict) and "ct" in personal
    model = MODELS[family] if sealed_already else _INPUT_MODELS[family]
    data = model.model_validate(body, extra=extra)
    clear = None if sealed_already else getattr(data, "personal", None)
    return Checked(
        family,
        data,
        clear.model_dump(mode="json", exclude_none=True) if clear is not None else None,
        data.person_key,  # type: ignore[attr-defined]
        time or datetime.now(UTC),
        event_id or new_event_id(),
    )


def check(family: Family, body: Any, prefix: tuple[int | str, ...] = ()) -> Checked | list[FieldError]:
    """``validate`` for input from outside: a refusal is a list of field errors (field and rule named)."""
    if not isinstance(body, dict):
        where = "".join(f"[{p}]" for p in prefix) or "(body)"
        return [FieldError(where, f"expected a JSON object, got {type(body).__name__}", None, "type")]
    try:
        return validate(family, body)
    except ValidationError as exc:
        return from_validation_error(exc, prefix=prefix)


def build_event(c: Checked, source: str, sealed: BaseModel | None) -> Event:
    """The contract's event from the validated input, with ``sealed`` in place of the clear block (no second
    validation: every field was validated and ``seal`` builds a valid block)."""
    model = MODELS[c.family]
    # Every field's value, under the contract's names (pydantic keeps nothing else in ``__dict__``).
    values = dict(c.data.__dict__)
    if c.personal is not None:
        values["personal"] = sealed
    data = built(model, c.data.model_fields_set, values)
    return Event(
        id=c.event_id, source=source, type=event_type(c.family), subject=c.subject, time=c.time, family=c.family,
        data=data,
    )  # fmt: skip


def seal_checked(c: Checked, data_key: bytes | None) -> BaseModel | None:
    """The sealed personal block of ``c`` (``None`` when it has none to seal)."""
    if c.personal is None:
        return None
    if data_key is None:
        raise ValueError("a data key is needed to seal personal fields")
    return seal(data_key, c.subject, c.personal)


def to_event(sub: Submission, data_key: bytes | None, *, extra: ExtraPolicy = "forbid") -> Event:
    """Validate, seal and build one submission's event (tests, benchmarks, the simulator's files).
    Raises ``pydantic.ValidationError``."""
    c = validate(sub.family, sub.data, extra=extra, time=sub.time, event_id=sub.event_id, trusted=True)
    return build_event(c, sub.source, seal_checked(c, data_key))
