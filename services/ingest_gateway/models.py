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
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import InitErrorDetails

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

    @cached_property
    def earliest_ms(self) -> int:
        return _millis(self.earliest)

    @cached_property
    def latest_ms(self) -> int:
        return _millis(self.latest)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _millis(instant: datetime) -> int:
    """Milliseconds since the epoch, truncated as fastavro stores a ``timestamp-millis``."""
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _finite(number: int | float) -> bool:
    """Whether ``number`` is a finite double: an int beyond a double's range (a JSON integer
    literal of 309 or more digits) is not, though ``math.isfinite`` raises for it."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _rules(info: ValidationInfo) -> ValidationRules:
    context = info.context
    return context if isinstance(context, ValidationRules) else ValidationRules()


# Which activity counts a device sends: Cole–Kripke sleep scoring runs only on ActiGraph-compatible counts
ActivityCountClass = Literal["unknown", "actigraph", "vendor"]


def _avro_class(kind: str) -> str:
    """The Avro symbol of a count class: the API's "unknown" is the schema's fallback "UNKNOWN"."""
    return "UNKNOWN" if kind == "unknown" else kind


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Text
    model: Text
    os: Text
    activity_counts: ActivityCountClass = Field(
        "unknown", description="Which activity counts the device sends: 'actigraph' (ActiGraph-compatible "
                               "counts, what Cole–Kripke sleep scoring was validated on), 'vendor' (the "
                               "vendor's own counts) or 'unknown' (the default).")


class Sample(BaseModel):
    """One measurement over [start, end). pydantic checks the shape and the types; the
    domain rules (:meth:`problems`) run afterwards, for the whole upload in one pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: SampleType
    start: AwareDatetime
    end: AwareDatetime
    value: SampleValue
    unit: StrictStr

    def problems(self, start_ms: int, end_ms: int, rules: ValidationRules) -> list[tuple[str, str]]:
        """The domain rules this sample breaks, as (field, reason); instants in epoch milliseconds."""
        found = []
        if start_ms < rules.earliest_ms:
            found.append(("start", f"older than the accepted history of {rules.history.days} days"))
        elif start_ms > rules.latest_ms:
            found.append(("start", "in the future"))
        if end_ms < start_ms:
            found.append(("end", "end must not be before start"))
        elif end_ms > rules.latest_ms:
            found.append(("end", "in the future"))
        kind, value = self.type, self.value
        if kind == "sleep_analysis":
            if value not in SLEEP_STAGES:
                found.append(("value", f"must be a sleep stage: {', '.join(SLEEP_STAGES)}"))
        elif value.__class__ is bool or not isinstance(value, int | float):
            found.append(("value", "must be a number"))
        elif not _finite(value) or value < 0:
            found.append(("value", "must be a finite, non-negative number"))
        elif kind == "heart_rate":
            if not HEART_RATE_RANGE[0] <= value <= HEART_RATE_RANGE[1]:
                found.append(("value", f"heart rate must be within {HEART_RATE_RANGE[0]:g}-"
                                       f"{HEART_RATE_RANGE[1]:g} count/min"))
        elif kind == "step_count" and value > MAX_STEPS_PER_MINUTE:
            minutes = max(1.0, (end_ms - start_ms) / 60_000)
            if value / minutes > MAX_STEPS_PER_MINUTE:
                found.append(("value", f"more than {MAX_STEPS_PER_MINUTE:g} steps per minute"))
        if self.unit != UNITS[kind]:
            found.append(("unit", f"unit of {kind} must be {UNITS[kind]!r}"))
        return found


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
        return cls.model_validate_json(body, context=rules)._checked(rules)

    @classmethod
    def validate_python(cls, data: Any, rules: ValidationRules) -> UploadRequest:
        return cls.model_validate(data, context=rules)._checked(rules)

    def _checked(self, rules: ValidationRules) -> UploadRequest:
        self.__dict__["sample_records"] = self._records(rules)  # sample_records, already built
        return self

    def _records(self, rules: ValidationRules | None) -> list[dict[str, Any]]:
        """The samples as Avro records, and with ``rules``, every sample's domain rules checked in
        the same pass. Rule errors are pydantic errors, like the type errors, each naming its field."""
        errors: list[InitErrorDetails] = []
        records = []
        for index, sample in enumerate(self.samples):
            start_ms, end_ms = _millis(sample.start), _millis(sample.end)
            problems = sample.problems(start_ms, end_ms, rules) if rules is not None else []
            if problems:
                errors.extend({"type": "value_error", "loc": ("samples", index, where),
                               "input": getattr(sample, where), "ctx": {"error": reason}}
                              for where, reason in problems)
                continue
            offset = sample.start.utcoffset()
            numeric = sample.type != "sleep_analysis"
            records.append({
                "type": sample.type,
                "start": start_ms,
                "end": end_ms,
                "utc_offset_minutes": int(offset.total_seconds() // 60) if offset else 0,
                "value": float(sample.value) + 0.0 if numeric else None,  # + 0.0: -0 is stored as 0
                "stage": None if numeric else sample.value,
                "unit": sample.unit,
            })
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return records

    @cached_property
    def sample_records(self) -> list[dict[str, Any]]:
        """The samples as the Avro record holds them, instants in epoch milliseconds (built once
        per upload: by validate_json/validate_python while they check the rules, else here)."""
        return self._records(None)

    def digest(self) -> str:
        """SHA-256 of what is stored (instants to the millisecond, offsets, values), so the
        same upload sent as JSON or Avro, or with other offset spellings, has one digest.
        One line per sample; its fields come from closed sets or are numbers, so the tab- and
        newline-separated form is unambiguous (the free-text device fields are JSON-quoted)."""
        device = self.device
        identity = [str(self.upload_id), device.id, device.model, device.os]
        if device.activity_counts != "unknown":  # digests of uploads that do not say stay as they were
            identity.append(device.activity_counts)
        digest = hashlib.sha256(json.dumps(identity).encode())
        for record in self.sample_records:
            digest.update(f"\n{record['type']}\t{record['start']}\t{record['end']}"
                          f"\t{record['utc_offset_minutes']}\t{record['value']!r}\t{record['stage']}"
                          f"\t{record['unit']}".encode())
        return digest.hexdigest()

    def to_record(self, user_id: str, received_at: datetime) -> dict[str, Any]:
        return {
            "upload_id": str(self.upload_id),
            "user_id": user_id,
            "received_at": received_at,
            "device": self.device.model_dump() | {"activity_counts": _avro_class(self.device.activity_counts)},
            "samples": self.sample_records,
        }
