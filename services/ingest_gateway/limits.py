"""Whether the gateway's documented limits fit what Kafka accepts, worked out from the schema.

The gateway promises to store every upload within its limits (``ingest_max_samples``, the
free-text fields' 128 characters), so the largest record such an upload can become must fit
the topic's ``max.message.bytes``. The bound is taken before compression: compression only
shrinks the batch, and how much depends on the data. At start-up the gateway refuses to
run when the bound does not fit (:func:`limit_problem`); per upload it refuses, with 413
and before producing, a record over the topic's limit (:func:`record_bytes`).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from circadia.auth import MAX_SUBJECT_LENGTH

MAX_VARINT = 10  # an Avro long, zig-zag varint encoded
MAX_TEXT_CHARS = 128  # device id, model and os (models.Text)
UTF8_BYTES_PER_CHAR = 4
UUID_CHARS = 36

# One io.circadia.health.Sample at its largest: the type enum's index (1 byte), start and end
# (longs), utc_offset_minutes (an int within ±1,440: 2 bytes), value (union index + 8-byte
# double), stage (union index + enum index: 1 byte when null, 2 when set, and value is then
# null: a numeric sample is the larger), unit (length + at most 9 bytes, "count/min").
SAMPLE_BYTES = 1 + MAX_VARINT + MAX_VARINT + 2 + (1 + 8) + 1 + (1 + len("count/min"))


def _text_bytes(chars: int) -> int:
    return MAX_VARINT + chars * UTF8_BYTES_PER_CHAR


# Everything of a HealthUpload but its samples: upload_id, user_id, received_at, the device's
# three texts and its count class (an enum index of one byte), the samples array's block count
# and terminator, and the null ``sealed`` union's index.
RECORD_FIXED_BYTES = (_text_bytes(UUID_CHARS) + _text_bytes(MAX_SUBJECT_LENGTH) + MAX_VARINT
                      + 3 * _text_bytes(MAX_TEXT_CHARS) + 1 + MAX_VARINT + 1 + 1)
# What sealing adds around that record (circadia.sealing): the envelope's routing fields (upload_id,
# user_id, received_at), its placeholders (three empty texts, the class, an empty samples array: a
# byte each), the ``sealed`` union's index, the key id and the wrapped data key (texts of at most
# 256 characters: a key name and identity, a transit ciphertext), the 12-byte nonce, the 16-byte GCM
# tag and the ciphertext's length, and the content schema's fingerprint (64 hex characters).
SEAL_BYTES = (_text_bytes(UUID_CHARS) + _text_bytes(MAX_SUBJECT_LENGTH) + MAX_VARINT + 5 + 1
              + 2 * _text_bytes(256) + (MAX_VARINT + 12) + (MAX_VARINT + 16) + _text_bytes(64))
# The record's Kafka headers (schema name and fingerprint, content type, upload id, the
# idempotency mark, traceparent and tracestate) with room to spare.
HEADERS_BYTES = 2048


def upload_record_bound(max_samples: int) -> int:
    """The most bytes one record batch holding an upload of ``max_samples`` can take on the
    wire before compression: key, Avro value (sealed), headers and the batch's own framing."""
    key = b"k" * (MAX_SUBJECT_LENGTH * UTF8_BYTES_PER_CHAR)
    value_bytes = SEAL_BYTES + RECORD_FIXED_BYTES + max_samples * SAMPLE_BYTES
    framing = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"", [])
    return framing + value_bytes + HEADERS_BYTES + MAX_VARINT  # + the value length's varint


def record_bytes(key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> int:
    """The size of a batch holding just this record, as the broker measures it uncompressed."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers)))


def limit_problem(topic: str, max_message_bytes: int, max_samples: int) -> str | None:
    """Why uploads within the gateway's limits could not all be stored on ``topic``, or None."""
    needed = upload_record_bound(max_samples)
    if needed <= max_message_bytes:
        return None
    return (f"topic {topic} accepts record batches up to {max_message_bytes:,} bytes (max.message.bytes), "
            f"but an upload of CIRCADIA_INGEST_MAX_SAMPLES={max_samples:,} samples can take up to "
            f"{needed:,} bytes: raise the topic's max.message.bytes to at least {needed} or lower "
            f"CIRCADIA_INGEST_MAX_SAMPLES to at most {max_samples_within(max_message_bytes):,}")


def max_samples_within(max_message_bytes: int) -> int:
    """The largest sample limit whose uploads all fit ``max_message_bytes``."""
    room = max_message_bytes - upload_record_bound(0)
    return max(0, room // SAMPLE_BYTES)
