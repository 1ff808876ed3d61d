"""The upload body as devices send it, its domain rules, and its mapping to the Avro record.

Validation needs the time and the configured bounds; they are passed as the pydantic
validation context (``UploadRequest.validate_json(body, rules)``) so the rules stay pure.
Every error names its field: ``("samples", 3, "value")``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

SampleType = Literal["step_count", "activity_count", "heart_rate", "sleep_analysis"]
SLEEP_STAGES = ("in_bed", "asleep_core", "asleep_deep", "asleep_rem", "asleep_unspecified", "awake")
UNITS: dict[str, str] = {
    "step_count": "count",
    "activity_count": "count",
    "heart_rate": "count/min",
    "sleep_analysis": "stage",
}
HEART_RATE_RANGE = (20.0, 300.0)  # count/min
MAX_STEPS_PER_MINUTE = 400.0
Text = Annotated[StrictStr, Field(min_length=1, max_length=128)]
SampleValue = Annotated[
    Any,
    WithJsonSchema({
        "description": "A number in the sample's unit; for sleep_analysis, the stage name.",
        "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "enum": list(SLEEP_STAGES)}],
    }),
]


@dataclass(frozen=True)
class ValidationRules:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    clock_skew: timedelta = timedelta(seconds=30)
    history: timedelta = timedelta(days=30)
    max_samples: int = 50_000

    @cached_property
    def earliest(self) -> datetime:
        return self.now - self.history

    @cached_property
    def latest(self) -> datetime:
        return self.now + self.clock_skew


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _millis(instant: datetime) -> int:
    """Milliseconds since the epoch, truncated as fastavro stores a ``timestamp-millis``."""
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _rules(info: ValidationInfo) -> ValidationRules:
    context = info.context
    return context if isinstance(context, ValidationRules) else ValidationRules()


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Text
    model: Text
    os: Text


class Sample(BaseModel):
    """One measurement over [start, end). Fields are validated in order, so later checks
    can rely on the earlier fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: SampleType
    start: AwareDatetime
    end: AwareDatetime
    value: SampleValue
    unit: StrictStr

    @field_validator("start")
    @classmethod
    def _start_within_history(cls, start: datetime, info: ValidationInfo) -> datetime:
        rules = _rules(info)
        if start < rules.earliest:
            raise ValueError(f"older than the accepted history of {rules.history.days} days")
        if start > rules.latest:
            raise ValueError("in the future")
        return start

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and end < start:
            raise ValueError("end must not be before start")
        if end > _rules(info).latest:
            raise ValueError("in the future")
        return end

    @field_validator("value")
    @classmethod
    def _value_fits_type(cls, value: Any, info: ValidationInfo) -> float | str:
        kind = info.data.get("type")
        if kind == "sleep_analysis":
            if value not in SLEEP_STAGES:
                raise ValueError(f"must be a sleep stage: {', '.join(SLEEP_STAGES)}")
            return str(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise ValueError("must be a finite, non-negative number")
        if kind == "heart_rate" and not HEART_RATE_RANGE[0] <= number <= HEART_RATE_RANGE[1]:
            raise ValueError(f"heart rate must be within {HEART_RATE_RANGE[0]:g}-{HEART_RATE_RANGE[1]:g} count/min")
        if kind == "step_count":
            start, end = info.data.get("start"), info.data.get("end")
            if start is not None and end is not None:
                minutes = max(1.0, (end - start).total_seconds() / 60)
                if number / minutes > MAX_STEPS_PER_MINUTE:
                    raise ValueError(f"more than {MAX_STEPS_PER_MINUTE:g} steps per minute")
        return number

    @field_validator("unit")
    @classmethod
    def _unit_fits_type(cls, unit: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        if kind is not None and unit != UNITS[kind]:
            raise ValueError(f"unit of {kind} must be {UNITS[kind]!r}")
        return unit

    def to_record(self) -> dict[str, Any]:
        offset = self.start.utcoffset()
        numeric = self.type != "sleep_analysis"
        return {
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "utc_offset_minutes": int(offset.total_seconds() // 60) if offset else 0,
            "value": float(self.value) if numeric else None,
            "stage": None if numeric else self.value,
            "unit": self.unit,
        }


class UploadRequest(BaseModel):
    """``POST /v1/uploads``. The user is the token's subject; ``user_id`` may be sent, but
    naming anyone else is refused (403)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upload_id: UUID
    user_id: Text | None = None
    device: Device
    samples: list[Sample] = Field(min_length=1)

    @field_validator("samples", mode="before")
    @classmethod
    def _not_too_many(cls, samples: Any, info: ValidationInfo) -> Any:
        limit = _rules(info).max_samples
        if isinstance(samples, list) and len(samples) > limit:
            raise ValueError(f"at most {limit} samples per upload")
        return samples

    @classmethod
    def validate_json(cls, body: bytes | str, rules: ValidationRules) -> UploadRequest:
        return cls.model_validate_json(body, context=rules)

    @classmethod
    def validate_python(cls, data: Any, rules: ValidationRules) -> UploadRequest:
        return cls.model_validate(data, context=rules)

    @cached_property
    def sample_records(self) -> list[dict[str, Any]]:
        """The samples as the Avro record holds them (built once per upload)."""
        return [sample.to_record() for sample in self.samples]

    def digest(self) -> str:
        """SHA-256 of what is stored (instants to the millisecond, offsets, values), so the
        same upload sent as JSON or Avro, or with other offset spellings, has one digest.
        One line per sample; its fields come from closed sets or are numbers, so the tab- and
        newline-separated form is unambiguous (the free-text device fields are JSON-quoted)."""
        device = self.device
        digest = hashlib.sha256(json.dumps([str(self.upload_id), device.id, device.model, device.os]).encode())
        for record in self.sample_records:
            digest.update(f"\n{record['type']}\t{_millis(record['start'])}\t{_millis(record['end'])}"
                          f"\t{record['utc_offset_minutes']}\t{record['value']!r}\t{record['stage']}"
                          f"\t{record['unit']}".encode())
        return digest.hexdigest()

    def to_record(self, user_id: str, received_at: datetime) -> dict[str, Any]:
        return {
            "upload_id": str(self.upload_id),
            "user_id": user_id,
            "received_at": received_at,
            "device": self.device.model_dump(),
            "samples": self.sample_records,
        }
