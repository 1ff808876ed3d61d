"""The upload body as devices send it, and its mapping to the published Avro record."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictStr, model_validator

SampleType = Literal["step_count", "activity_count", "heart_rate", "sleep_analysis"]
SleepStage = Literal[
    "in_bed", "asleep_core", "asleep_deep", "asleep_rem", "asleep_unspecified", "awake"
]
UNITS: dict[str, str] = {
    "step_count": "count",
    "activity_count": "count",
    "heart_rate": "count/min",
    "sleep_analysis": "stage",
}
Text = Annotated[StrictStr, Field(min_length=1, max_length=128)]


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Text
    model: Text
    os: Text


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: SampleType
    start: AwareDatetime
    end: AwareDatetime
    value: float | SleepStage
    unit: StrictStr

    @model_validator(mode="after")
    def _consistent(self) -> Sample:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        expected = UNITS[self.type]
        if self.unit != expected:
            raise ValueError(f"unit of {self.type} must be {expected!r}")
        if self.type == "sleep_analysis":
            if not isinstance(self.value, str):
                raise ValueError("value of sleep_analysis must be a sleep stage name")
        elif isinstance(self.value, str):
            raise ValueError(f"value of {self.type} must be a number")
        elif not math.isfinite(self.value) or self.value < 0:
            raise ValueError("value must be a finite, non-negative number")
        return self

    def to_record(self) -> dict[str, Any]:
        offset = self.start.utcoffset()
        numeric = not isinstance(self.value, str)
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
    """``POST /v1/uploads``. There is no user field: the user is the token's subject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upload_id: UUID
    device: Device
    samples: list[Sample] = Field(min_length=1)

    def to_record(self, user_id: str, received_at: datetime) -> dict[str, Any]:
        return {
            "upload_id": str(self.upload_id),
            "user_id": user_id,
            "received_at": received_at,
            "device": self.device.model_dump(),
            "samples": [sample.to_record() for sample in self.samples],
        }
