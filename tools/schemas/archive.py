"""Add every earlier version of each schema in git history to ``schemas/archive/``.

Readers resolve a record's writer schema by fingerprint (``circadia.avro``); a version missing from
the archive leaves the records it wrote unreadable after the next change. Run ``make
schemas-archive`` after changing a schema's file, before committing the change; the schema
evolution test fails while a version is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys

from circadia.avro import ARCHIVE, AvroSchema, SchemaSet
from circadia.paths import schemas_dir
from circadia_dev.paths import PROJECT_ROOT


def earlier_versions() -> list[str]:
    """The distinct texts every ``schemas/**/*.avsc`` file had in any commit (renames followed)."""
    root = schemas_dir()
    texts: list[str] = []
    for path in sorted(root.rglob("*.avsc")):
        if root / ARCHIVE in path.parents:
            continue
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        log = subprocess.run(["git", "-C", str(PROJECT_ROOT), "log", "--follow", "--format=%H", "--name-only", "--",  # noqa: S607
                              relative], capture_output=True, text=True, check=True).stdout.split()
        for commit, name in zip(log[::2], log[1::2], strict=True):
            shown = subprocess.run(["git", "-C", str(PROJECT_ROOT), "show", f"{commit}:{name}"],  # noqa: S607
                                   capture_output=True, text=True, check=True).stdout
            if shown not in texts:
                texts.append(shown)
    return texts


def main() -> int:
    archive = schemas_dir() / ARCHIVE
    archive.mkdir(exist_ok=True)
    known = SchemaSet.load().fingerprints()
    added = 0
    for text in earlier_versions():
        raw = json.loads(text)
        path = archive / f"{raw['namespace']}.{raw['name']}.tmp.avsc"
        path.write_text(text)
        schema = AvroSchema.from_file(path)
        if schema.fingerprint in known:
            path.unlink()
            continue
        path.rename(archive / f"{schema.name}-{schema.fingerprint[:16]}.avsc")
        known.add(schema.fingerprint)
        added += 1
    print(f"{added} earlier schema version(s) added to {archive.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
