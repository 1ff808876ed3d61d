"""Every schema stays backward and forward compatible with each earlier version in git.

Backward: a reader on the current schema reads data written with any earlier version.
Forward: a reader on any earlier version reads data written with the current schema.
Earlier versions are the distinct contents the file had in the commits that changed it
(following renames), so a breaking change fails ``make test`` before it can land.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from circadia.avro import ARCHIVE, AvroSchema, SchemaSet
from circadia.paths import schemas_dir
from circadia_dev.paths import PROJECT_ROOT

SCHEMA_FILES = sorted(path for path in schemas_dir().rglob("*.avsc") if schemas_dir() / ARCHIVE not in path.parents)


def _git(*args: str, root: Path = PROJECT_ROOT) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)  # noqa: S607  (PATH's git)
    if result.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed (schema history needs a git checkout): {result.stderr}")
    return result.stdout


def earlier_versions(path: Path, root: Path = PROJECT_ROOT) -> list[tuple[str, str]]:
    """(commit, text) of each distinct committed version of ``path`` that differs from the file now."""
    if _git("rev-parse", "--is-shallow-repository", root=root).strip() == "true":
        pytest.fail("shallow clone: schema history is incomplete; fetch with --unshallow")
    relative = path.relative_to(root).as_posix()
    log = _git("log", "--follow", "--format=commit %H", "--name-only", "--", relative, root=root).split()
    current, seen, versions = path.read_text(), set(), []
    commit = None
    for token in log:
        if token == "commit":
            continue
        if len(token) == 40 and all(c in "0123456789abcdef" for c in token):
            commit = token
            continue
        text = _git("show", f"{commit}:{token}", root=root)
        if text != current and text not in seen:
            seen.add(text)
            versions.append((commit, text))
    return versions


def incompatibilities(reader: str, writer: str) -> list[str]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(avro.schema.parse(reader), avro.schema.parse(writer))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return [f"{'/'.join(result.locations)}: {message}" for message in result.messages] or ["incompatible"]


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_is_compatible_with_every_earlier_version(path: Path) -> None:
    current = path.read_text()
    for commit, earlier in earlier_versions(path):
        assert not incompatibilities(current, earlier), f"{path.name} cannot read data from {commit[:10]}"
        assert not incompatibilities(earlier, current), f"{path.name} at {commit[:10]} cannot read new data"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_earlier_version_is_a_known_writer(path: Path, tmp_path: Path) -> None:
    """A record written with any earlier version (still on a topic, or from a replica not yet
    upgraded) decodes: its fingerprint is in the archive (``make schemas-archive``)."""
    known = SchemaSet.load().fingerprints()
    for commit, earlier in earlier_versions(path):
        copy = tmp_path / f"{commit}.avsc"
        copy.write_text(earlier)
        assert AvroSchema.from_file(copy).fingerprint in known, (
            f"{path.name} at {commit[:10]} is not in schemas/{ARCHIVE}/: run make schemas-archive")


def test_a_record_of_an_earlier_version_reads_into_the_current_schema() -> None:
    schemas = SchemaSet.load()
    current = schemas["io.circadia.health.HealthUpload"]
    archived = [p for p in (schemas_dir() / ARCHIVE).glob("io.circadia.health.HealthUpload-*.avsc")]
    assert archived, "no earlier HealthUpload version archived"
    for path in archived:
        old = AvroSchema.from_file(path)
        record = {"upload_id": "7c8f3c9e-2f4b-4a51-9d55-1d0f5c2b8a10", "user_id": "u", "received_at": 0,
                  "device": {"id": "d", "model": "m", "os": "o"}, "samples": []}
        decoded = schemas.decode(old.write(record), old.headers(), current, logical=False)
        assert decoded["device"]["id"] == "d" and decoded["sealed"] is None


BASE = '{"type": "record", "name": "R", "fields": [%s]}'
A = '{"name": "a", "type": "string"}'


@pytest.mark.parametrize(("old", "new", "backward", "forward"), [
    (A, A + ', {"name": "b", "type": ["null", "int"], "default": null}', True, True),
    (A, A + ', {"name": "b", "type": "int"}', False, True),
    (A + ', {"name": "b", "type": "int"}', A, True, False),
    (A, '{"name": "a", "type": "int"}', False, False),
    ('{"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"]}}',
     '{"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X"]}}', False, True),
])
def test_the_checker_tells_breaking_changes_apart(old: str, new: str, backward: bool, forward: bool) -> None:
    assert (not incompatibilities(BASE % new, BASE % old)) is backward
    assert (not incompatibilities(BASE % old, BASE % new)) is forward


def test_a_breaking_change_against_history_is_found(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "schemas").mkdir(parents=True)
    schema = repo / "schemas" / "r.avsc"
    _git("init", "-q", root=repo)
    for version in (A, A + ', {"name": "b", "type": ["null", "int"], "default": null}'):
        schema.write_text(BASE % version)
        _git("add", ".", root=repo)
        _git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "v", root=repo)
    schema.write_text(BASE % '{"name": "a", "type": "long"}')  # the change under review
    versions = earlier_versions(schema, repo)
    assert len(versions) == 2
    assert all(incompatibilities(schema.read_text(), text) for _, text in versions)
