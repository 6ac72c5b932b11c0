"""What a client system submits, before the edge seals it: the unit adapters and the simulator share.

A ``Submission`` carries an event's data as plain JSON-like values with the personal fields in clear
under ``"personal"``. ``to_event`` validates the personal block against its family's model, seals it with
the person's data key, validates the whole event against its contract and returns the ``Event`` to put in
the outbox. Validation errors surface as ``pydantic.ValidationError`` with exact field paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails

from contracts.envelope import MODELS, Event, Family, event_type, new_event_id
from contracts.events import PlacementPersonal, ReferralPersonal, RegistrationPersonal
from infra.crypto import seal

PERSONAL_MODELS: dict[Family, type[BaseModel]] = {
    Family.REGISTRATION: RegistrationPersonal,
    Family.REFERRAL: ReferralPersonal,
    Family.PLACEMENT: PlacementPersonal,
}

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


def to_event(sub: Submission, data_key: bytes | None, *, extra: ExtraPolicy = "forbid") -> Event:
    """Seal the personal block (if any) and validate the event. Raises ``pydantic.ValidationError``."""
    data = dict(sub.data)
    personal = data.get("personal")
    personal_model = PERSONAL_MODELS.get(sub.family)
    if personal is not None and personal_model is not None and "ct" not in personal:
        try:
            clear = personal_model.model_validate(personal, extra=extra)
        except ValidationError as exc:
            raise _under("personal", MODELS[sub.family].__name__, exc) from None
        if data_key is None:
            raise ValueError("a data key is needed to seal personal fields")
        data["personal"] = seal(
            data_key, str(data.get("person_key")), clear.model_dump(mode="json", exclude_none=True)
        ).model_dump()
    model = MODELS[sub.family].model_validate(data, extra=extra)
    return Event(
        id=sub.event_id,
        source=sub.source,
        type=event_type(sub.family),
        subject=model.person_key,  # type: ignore[attr-defined]
        time=sub.time,
        family=sub.family,
        data=model,
    )


def _under(prefix: str, title: str, exc: ValidationError) -> ValidationError:
    """Re-root a nested model's errors so their paths name the field as the client sent it."""
    details: list[InitErrorDetails] = []
    for err in exc.errors(include_url=False):
        detail: InitErrorDetails = {"type": err["type"], "loc": (prefix, *err["loc"]), "input": err["input"]}
        if "ctx" in err:
            detail["ctx"] = err["ctx"]
        details.append(detail)
    return ValidationError.from_exception_data(title, details)
