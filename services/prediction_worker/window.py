"""A user's trailing 7-day window of minute-level data: the worker's per-user state.

What it holds
- per device, per measure, one value per UTC minute of the window (NaN = no data):
  ``step_count`` and ``activity_count`` (count in that minute), and for heart rate the
  weighted sum and the weight (minutes) of readings, so means stay exact when merged;
- per device, the class of its activity counts (``device.activity_counts``: ``actigraph``, ``vendor``
  or ``unknown``; see ``prediction_worker.inputs``): what its latest upload with counts said (not
  saying is ``unknown``), or what a later upload without counts stated explicitly;
- device-reported sleep-stage intervals, kept one day beyond the window's start so the
  night that straddles it stays whole;
- the ``upload_id``s already applied — the newest ``APPLIED_KEPT`` of the last 8 days — so a
  redelivered upload is never counted twice, and those applied but not
  yet reflected in a published result (``pending``).

Resampling (method ``minute-resampling/prorated@1``)
- a sample over [start, end) spreads its value over the minutes it overlaps, each minute
  receiving the share of the sample's duration that falls into it; an instantaneous
  sample counts wholly in its minute (heart rate: an instant weighs one minute);
- within one upload a device's samples add up; a later upload from the same device
  replaces that device's values for the minutes it covers (a re-synced range is not
  counted twice);
- across devices, step and activity counts are merged by taking the per-minute maximum
  (two devices measuring the same walk must not double it), heart rate by the weighted
  mean of all devices' readings;
- minutes without data stay missing (NaN), never zero.

The window ends at the end of the latest minute with data and spans 10,080 minutes;
samples that end before its start are dropped (and counted).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import cramjam
import numpy as np

WINDOW_MINUTES = 10_080
MINUTE_MS = 60_000
DAY_MINUTES = 1440
APPLIED_RETENTION_MS = 8 * 24 * 3600 * 1000
# Redelivery (a worker that died before committing) concerns the last few seconds of uploads,
# and client retries are caught by the gateway's 7-day ledger; a re-applied upload from the
# same device also only rewrites its own minutes. So a bounded memory of the newest uploads
# suffices, and keeps a busy user's window from growing with every upload for 8 days.
APPLIED_KEPT = 128
RESAMPLING_METHOD = "minute-resampling/prorated@1"
MOVEMENT = ("step_count", "activity_count")
HR_SUM, HR_WEIGHT = "heart_rate_sum", "heart_rate_weight"
# the resampled measures, in the order an upload's samples are merged (it decides which tracks
# a device's measures dict holds first, and so the changelog value's layout)
_TIMED = {measure: code for code, measure in enumerate((*MOVEMENT, "heart_rate"))}
# CWIN2: the minute arrays, then the sleep intervals as columns (start, end, offset, stage and
# device indices), compressed together with zstd level 1; the header (JSON) holds the rest. CWIN1
# (zlib level 1, the sleep intervals in the header) is still read: a changelog written before the
# change restores. On a full week zstd 1 is smaller than zlib 1 (14 against 19 KB for a watch) at a
# third of the CPU to write and half to read, and a week's 250 stage intervals as columns cost a
# tenth of what they cost as JSON rows (bench/worker_apply.py).
_MAGIC, _MAGIC_ZLIB = b"CWIN2", b"CWIN1"
_SLEEP_COLUMNS = (("start_ms", "<i8"), ("end_ms", "<i8"), ("utc_offset_minutes", "<i4"), ("stage", "<u2"),
                  ("device", "<u2"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)  # built once: apply converts two instants per sample
_LARGEST = np.finfo(np.float64).max
MAX_PIECES = 1 << 20  # sample-minute pieces resampled at once (memory: ~60 bytes each)


class StateFormatError(ValueError):
    """Bytes that are not a serialised window (wrong magic, truncated, inconsistent)."""


def _ms(value: datetime | int) -> int:
    """Milliseconds since the epoch of an instant, decoded as a datetime or left as the integer
    it is on the wire (``SchemaSet.decode(..., logical=False)``, what the worker does)."""
    if isinstance(value, int):
        return value
    return (value - _EPOCH) // _MILLISECOND


def _ms_array(samples: list[Mapping[str, Any]], key: str) -> np.ndarray:
    if samples and isinstance(samples[0][key], int):
        try:
            return np.array([s[key] for s in samples], dtype=np.int64)
        except TypeError:  # mixed: take them one by one
            pass
    return np.array([_ms(s[key]) for s in samples], dtype=np.int64)


@dataclass(frozen=True)
class _Spread:
    """One device's samples of one measure, resampled over minutes ``first`` .. ``first + n``
    of the window (n = ``covered.size``; ``covered`` is None when no sample reaches the window)."""

    first: int
    values: np.ndarray
    weights: np.ndarray | None  # minutes of readings, for heart rate
    covered: np.ndarray | None
    dropped: int


def _spread(start: np.ndarray, end: np.ndarray, value: np.ndarray, weigh: bool) -> _Spread:
    """Resample samples over [start, end) (ms from the window's start) to minutes of the window.

    Each sample becomes one piece per minute it overlaps (an instant, or a sample that ends
    before it starts, one piece in its minute, wholly). A piece carries the sample's value
    times its share of the sample's duration, or with ``weigh`` times its minutes (the
    weight). Only minutes inside the window become pieces; a sample that ends before the
    window starts is dropped. The pieces are laid out sample by sample in upload order and
    ``np.bincount`` sums them per minute in that order, so every minute's sum is formed
    exactly as adding the samples one by one would form it, bit for bit."""
    first = start // MINUTE_MS
    last = np.maximum(first + 1, -(-end // MINUTE_MS))  # exclusive
    dropped = int(np.count_nonzero(last <= 0))
    low, high = np.maximum(first, 0), np.minimum(last, WINDOW_MINUTES)
    pieces = np.maximum(high - low, 0)
    inside = pieces > 0
    if not inside.any():
        return _Spread(0, np.empty(0), None, None, dropped)
    lo, size = int(low[inside].min()), int(high[inside].max()) - int(low[inside].min())
    values, weights = np.zeros(size), np.zeros(size) if weigh else None
    covered = np.zeros(size, dtype=bool)
    # At most MAX_PIECES pieces at a time: 50,000 samples that each span the week would be half
    # a billion pieces. Each batch's sums are added in upload order; within one batch (every
    # upload a device really sends) the sums are the sequential ones, bit for bit.
    ends_at = np.cumsum(pieces)
    begin = 0
    while begin < pieces.size:
        stop = max(begin + 1, int(np.searchsorted(ends_at, ends_at[begin] - pieces[begin] + MAX_PIECES, "right")))
        batch = slice(begin, stop)
        count = pieces[batch]
        total = int(count.sum())
        begin = stop
        if total == 0:
            continue
        sample = np.repeat(np.arange(count.size), count)
        # the minute of each piece: its sample's first minute in the window, then one after another
        minute = low[batch][sample] + (np.arange(total) - (np.cumsum(count) - count)[sample])
        s, e = start[batch][sample], end[batch][sample]
        instant = e <= s
        overlap = np.minimum((minute + 1) * MINUTE_MS, e) - np.maximum(minute * MINUTE_MS, s)
        if weigh:
            part = np.where(instant, 1.0, overlap / MINUTE_MS)
        else:
            part = np.where(instant, 1.0, overlap / np.where(instant, 1, e - s))
        offset = minute - lo
        values += np.bincount(offset, weights=value[batch][sample] * part, minlength=size)
        if weights is not None:
            weights += np.bincount(offset, weights=part, minlength=size)
        covered |= np.bincount(offset, minlength=size) > 0
    return _Spread(first=lo, values=values, weights=weights, covered=covered, dropped=dropped)


class SleepInterval(NamedTuple):  # a tuple: a restored window builds hundreds of them
    start_ms: int
    end_ms: int
    stage: str
    utc_offset_minutes: int
    device: str


def count_class_of(device: Mapping[str, Any]) -> str:
    """The class of a device record's activity counts: "actigraph", "vendor" or "unknown" (the
    schema's fallback symbol "UNKNOWN", also what a class this worker does not know reads as)."""
    kind = str(device.get("activity_counts") or "UNKNOWN")
    return "unknown" if kind == "UNKNOWN" else kind


@dataclass(frozen=True)
class ApplyReport:
    samples: int
    dropped_too_old: int


@dataclass
class UserWindow:
    end_minute: int = 0  # exclusive end, minutes since the epoch (UTC); 0 while empty
    utc_offset_minutes: int = 0  # the offset of the latest data: local time for daily and circadian metrics
    tracks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    sleep: list[SleepInterval] = field(default_factory=list)
    count_classes: dict[str, str] = field(default_factory=dict)  # device -> class of its activity counts
    applied: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    # the W3C traceparent of the upload that made ``pending`` non-empty: a result published later
    # (by the flush timer) belongs to that upload's trace
    pending_trace: str = ""
    last_published_ms: int = 0

    @property
    def start_minute(self) -> int:
        return self.end_minute - WINDOW_MINUTES

    def holds(self, upload_id: str) -> bool:
        return upload_id in self.applied

    # --- applying an upload -------------------------------------------------------------

    def apply(self, upload: Mapping[str, Any]) -> ApplyReport:
        """Merge one decoded ``HealthUpload`` into the window (see the module rules).

        The samples' instants and values are read into arrays once and resampled as whole
        arrays (see ``_spread``): the worker applies uploads on its event loop, and a numpy
        call per sample made a week's backlog block it for most of a second. Everything is
        read before the window changes: a sample without a number fails the upload with the
        window untouched."""
        device = str(upload["device"]["id"])
        count_class = count_class_of(upload["device"])
        samples = list(upload["samples"])
        received_ms = _ms(upload["received_at"])
        timed = [s for s in samples if s["type"] in _TIMED]
        kinds = np.array([_TIMED[s["type"]] for s in timed], dtype=np.int8)
        starts, ends = _ms_array(timed, "start"), _ms_array(timed, "end")
        values = np.array([float(s["value"]) for s in timed], dtype=np.float64)
        if timed:
            # the latest sample by (end, start), the first of equals in upload order
            top_end = ends.max()
            top_start = starts[ends == top_end].max()
            latest = int(np.flatnonzero((ends == top_end) & (starts == top_start))[0])
            new_end = -(-max(int(top_end), int(top_start) + 1) // MINUTE_MS)
            if new_end >= self.end_minute:
                self.utc_offset_minutes = int(timed[latest]["utc_offset_minutes"])
            self._advance(new_end)
        origin = self.start_minute * MINUTE_MS
        dropped = 0
        for code, measure in enumerate(_TIMED):
            chosen = kinds == code
            if not chosen.any():
                continue
            spread = _spread(starts[chosen] - origin, ends[chosen] - origin, values[chosen],
                             weigh=measure == "heart_rate")
            dropped += spread.dropped
            if spread.covered is None:
                continue
            at, covered = slice(spread.first, spread.first + spread.covered.size), spread.covered
            if spread.weights is None:
                # counts of one minute added up beyond a double's range are stored as its largest value:
                # a window never holds an infinity (every metric downstream needs finite minutes)
                self._track(device, measure)[at][covered] = np.minimum(spread.values[covered], _LARGEST)
            else:
                self._track(device, HR_SUM)[at][covered] = spread.values[covered]
                self._track(device, HR_WEIGHT)[at][covered] = spread.weights[covered]
        self._apply_sleep(device, [s for s in samples if s["type"] == "sleep_analysis"])
        self._note_class(device, count_class, sends_counts=bool((kinds == _TIMED["activity_count"]).any()))
        self._remember(str(upload["upload_id"]), received_ms)
        return ApplyReport(samples=len(samples), dropped_too_old=dropped)

    def _note_class(self, device: str, declared: str, *, sends_counts: bool) -> None:
        """The class of a device's counts: what an upload with counts says (not saying is "unknown"),
        or what an upload without counts states explicitly; silence without counts changes nothing."""
        if device in self.tracks and (sends_counts or declared != "unknown"):
            self.count_classes[device] = declared

    def _remember(self, upload_id: str, received_ms: int) -> None:
        """Note an applied upload; keep the newest ``APPLIED_KEPT`` of the retention period."""
        self.applied[upload_id] = received_ms
        horizon = max(self.applied.values()) - APPLIED_RETENTION_MS
        newest = sorted(self.applied.items(), key=lambda item: item[1])[-APPLIED_KEPT:]
        self.applied = {uid: at for uid, at in newest if at >= horizon}

    def _advance(self, new_end: int) -> None:
        if new_end <= self.end_minute:
            return
        shift = new_end - self.end_minute
        for measures in self.tracks.values():
            for name, values in measures.items():
                if shift >= WINDOW_MINUTES:
                    values[:] = np.nan
                else:
                    values[:-shift] = values[shift:]
                    values[-shift:] = np.nan
                measures[name] = values
        self.end_minute = new_end
        keep_from = (self.start_minute - DAY_MINUTES) * MINUTE_MS
        self.sleep = [iv for iv in self.sleep if iv.end_ms > keep_from]
        self._drop_empty_tracks()

    def _track(self, device: str, measure: str) -> np.ndarray:
        measures = self.tracks.setdefault(device, {})
        if measure not in measures:
            measures[measure] = np.full(WINDOW_MINUTES, np.nan)
        return measures[measure]

    def _apply_sleep(self, device: str, samples: list[Mapping[str, Any]]) -> None:
        if not samples:
            return
        fresh = [SleepInterval(_ms(s["start"]), _ms(s["end"]), str(s["stage"]), int(s["utc_offset_minutes"]), device)
                 for s in samples]
        lo, hi = min(iv.start_ms for iv in fresh), max(iv.end_ms for iv in fresh)
        # a device's newer report of a period replaces its older report of it
        kept = [iv for iv in self.sleep if iv.device != device or iv.end_ms <= lo or iv.start_ms >= hi]
        keep_from = (self.start_minute - DAY_MINUTES) * MINUTE_MS
        self.sleep = sorted((iv for iv in kept + fresh if iv.end_ms > keep_from),
                            key=lambda iv: (iv.start_ms, iv.end_ms, iv.device))

    def _drop_empty_tracks(self) -> None:
        for device in list(self.tracks):
            measures = self.tracks[device]
            for name in [n for n, v in measures.items() if np.isnan(v).all()]:
                del measures[name]
            if not measures:
                del self.tracks[device]
                self.count_classes.pop(device, None)

    # --- reading the merged window ------------------------------------------------------

    def movement(self, measure: str) -> np.ndarray:
        """Per-minute counts merged over devices (maximum), NaN where no device has data."""
        merged = np.full(WINDOW_MINUTES, np.nan)
        for measures in self.tracks.values():
            if measure in measures:
                merged = np.fmax(merged, measures[measure])
        return merged

    def heart_rate(self) -> tuple[np.ndarray, np.ndarray]:
        """(weighted sum, weight) per minute over all devices; weight 0 where nothing was read."""
        total, weight = np.zeros(WINDOW_MINUTES), np.zeros(WINDOW_MINUTES)
        for measures in self.tracks.values():
            if HR_SUM in measures:
                total += np.nan_to_num(measures[HR_SUM])
                weight += np.nan_to_num(measures[HR_WEIGHT])
        return total, weight

    def has(self, measure: str) -> bool:
        return any(measure in measures for measures in self.tracks.values())

    # --- serialisation (the faust table's changelog value) --------------------------------

    def to_bytes(self) -> bytes:
        arrays: list[bytes] = []
        layout: dict[str, dict[str, int]] = {}
        for device, measures in self.tracks.items():
            layout[device] = {}
            for name, values in measures.items():
                layout[device][name] = len(arrays)
                arrays.append(np.ascontiguousarray(values, dtype="<f8").tobytes())
        stages = sorted({iv.stage for iv in self.sleep})
        devices = sorted({iv.device for iv in self.sleep})
        stage_index, device_index = {v: i for i, v in enumerate(stages)}, {v: i for i, v in enumerate(devices)}
        columns = (
            [iv.start_ms for iv in self.sleep], [iv.end_ms for iv in self.sleep],
            [iv.utc_offset_minutes for iv in self.sleep], [stage_index[iv.stage] for iv in self.sleep],
            [device_index[iv.device] for iv in self.sleep],
        )
        for column, (_, dtype) in zip(columns, _SLEEP_COLUMNS, strict=True):
            arrays.append(np.array(column, dtype=dtype).tobytes())
        header = json.dumps({
            "end_minute": self.end_minute,
            "utc_offset_minutes": self.utc_offset_minutes,
            "layout": layout,
            "sleep": {"count": len(self.sleep), "stages": stages, "devices": devices},
            "count_classes": {d: c for d, c in self.count_classes.items() if d in self.tracks},
            "applied": self.applied,
            "pending": self.pending,
            "pending_trace": self.pending_trace,
            "last_published_ms": self.last_published_ms,
        }).encode()
        body = bytes(cramjam.zstd.compress(b"".join(arrays), level=1))
        return _MAGIC + struct.pack(">I", len(header)) + header + body

    @classmethod
    def from_bytes(cls, data: bytes) -> UserWindow:
        magic = data[:len(_MAGIC)]
        if magic not in (_MAGIC, _MAGIC_ZLIB) or len(data) < len(_MAGIC) + 4:
            raise StateFormatError("not a serialised user window")
        (size,) = struct.unpack(">I", data[len(_MAGIC):len(_MAGIC) + 4])
        offset = len(_MAGIC) + 4
        try:
            header = json.loads(data[offset:offset + size])
            body = data[offset + size:]
            blob = zlib.decompress(body) if magic == _MAGIC_ZLIB else bytes(cramjam.zstd.decompress(body))
            stride = WINDOW_MINUTES * 8
            tracks: dict[str, dict[str, np.ndarray]] = {}
            for device, measures in header["layout"].items():
                tracks[device] = {}
                for name, index in measures.items():
                    chunk = blob[index * stride:(index + 1) * stride]
                    if len(chunk) != stride:
                        raise StateFormatError("truncated user window")
                    tracks[device][name] = np.frombuffer(chunk, dtype="<f8").copy()
            if magic == _MAGIC_ZLIB:
                sleep = [SleepInterval(*row) for row in header["sleep"]]
            else:
                sleep = cls._sleep_columns(header["sleep"], blob[sum(len(m) for m in tracks.values()) * stride:])
            return cls(
                end_minute=header["end_minute"],
                utc_offset_minutes=header["utc_offset_minutes"],
                tracks=tracks,
                sleep=sleep,
                count_classes=dict(header.get("count_classes", {})),
                applied=header["applied"],
                pending=header["pending"],
                pending_trace=header.get("pending_trace", ""),
                last_published_ms=header["last_published_ms"],
            )
        except StateFormatError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, zlib.error, cramjam.DecompressionError) as exc:
            raise StateFormatError(f"corrupt user window: {exc!r}") from None

    @staticmethod
    def pending_in(data: bytes) -> list[str]:
        """The ``pending`` upload ids of a serialised window, from its header alone (a worker
        that has just restored thousands of windows looks for pending uploads in each)."""
        if data[:len(_MAGIC)] not in (_MAGIC, _MAGIC_ZLIB) or len(data) < len(_MAGIC) + 4:
            raise StateFormatError("not a serialised user window")
        (size,) = struct.unpack(">I", data[len(_MAGIC):len(_MAGIC) + 4])
        try:
            return list(json.loads(data[len(_MAGIC) + 4:len(_MAGIC) + 4 + size])["pending"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateFormatError(f"corrupt user window: {exc!r}") from None

    @staticmethod
    def _sleep_columns(meta: Mapping[str, Any], blob: bytes) -> list[SleepInterval]:
        count, at, columns = int(meta["count"]), 0, []
        for _, dtype in _SLEEP_COLUMNS:
            width = np.dtype(dtype).itemsize * count
            if len(blob) < at + width:
                raise StateFormatError("truncated user window")
            columns.append(np.frombuffer(blob[at:at + width], dtype=dtype).tolist())
            at += width
        stages, devices = meta["stages"], meta["devices"]
        return [SleepInterval(start, end, stages[stage], offset, devices[device])
                for start, end, offset, stage, device in zip(*columns, strict=True)]
