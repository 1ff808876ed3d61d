"""Every start is an audit event: non-secret settings, secret versions, and what changed."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from circadia.audit import publish_audit
from circadia.config import resolve
from ingest_gateway.settings import IngestSettings


def config(kafka_bootstrap: str, secrets_dir: Path, service: str, **overrides: object):
    options: dict[str, object] = {"firebase_project_id": "p", "env": "development",
                                  "kafka_security_protocol": "PLAINTEXT", "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                  "secrets_dir": secrets_dir}
    options.update(overrides)
    return resolve(service, IngestSettings(**options))


def test_events_carry_settings_secret_versions_and_the_diff(kafka_bootstrap: str, tmp_path: Path) -> None:
    service = f"audited-{uuid.uuid4().hex[:6]}"  # a service name of its own: no earlier events
    (tmp_path / "redis_password").write_text("first-redis-password")
    first = asyncio.run(publish_audit(config(kafka_bootstrap, tmp_path, service, ingest_max_samples=100)))
    assert first["changes"] == [] and first["previous_at"] is None
    assert first["settings"]["ingest_max_samples"] == "100"
    assert first["secret_versions"]["redis_password"].endswith(f"from file:{tmp_path / 'redis_password'}")

    (tmp_path / "redis_password").write_text("second-redis-password")
    second = asyncio.run(publish_audit(config(kafka_bootstrap, tmp_path, service, ingest_max_samples=200)))
    changed = {change["key"]: change for change in second["changes"]}
    assert set(changed) == {"ingest_max_samples", "secret:redis_password"}
    assert (changed["ingest_max_samples"]["before"], changed["ingest_max_samples"]["after"]) == ("100", "200")
    assert second["previous_at"] == first["at"].replace(microsecond=first["at"].microsecond // 1000 * 1000)
    text = repr(first) + repr(second)
    assert "first-redis-password" not in text and "second-redis-password" not in text

    third = asyncio.run(publish_audit(config(kafka_bootstrap, tmp_path, service, ingest_max_samples=200)))
    assert third["changes"] == []  # nothing changed since the second start
