"""detect-secrets over the repository's tracked files, against the committed ``.secrets.baseline``.

Fails (exit 1) when a file holds a potential secret that the baseline does not list, or when the
baseline lists one that has not been audited as a false positive (``detect-secrets audit``).
Prints a finding's type, file and line, never its value. Unlike ``detect-secrets-hook`` it never
rewrites the baseline, so it is safe in CI, and a known finding whose line moved is not news.

  .venv/bin/python tools/secrets/check_baseline.py            # every file git tracks
  .venv/bin/python tools/secrets/check_baseline.py FILE...    # just these files
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from detect_secrets.core import baseline
from detect_secrets.core.secrets_collection import SecretsCollection

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ".secrets.baseline"


def tracked_files() -> list[str]:
    listing = subprocess.run(["git", "ls-files", "-z"], check=True, capture_output=True).stdout  # noqa: S607
    return [name for name in listing.decode().split("\0") if name and os.path.isfile(name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help="files to scan (default: every file git tracks)")
    args = parser.parse_args(argv)
    files = [os.path.abspath(name) for name in args.files]
    os.chdir(ROOT)  # the baseline names files relative to the repository root
    files = [os.path.relpath(name) if name.startswith(str(ROOT) + os.sep) else name for name in files]

    # loading the baseline also configures the plugins and filters it was made with
    known = baseline.load(baseline.load_from_file(BASELINE), BASELINE)
    targets = files or tracked_files()
    found = SecretsCollection()
    for name in targets:
        found.scan_file(name)

    failed = False
    new = [secret for _, secret in found - known]
    if new:
        failed = True
        print(f"detect-secrets: {len(new)} potential secret(s) not in {BASELINE}:")
        for secret in sorted(new, key=lambda s: (s.filename, s.line_number or 0)):
            print(f"  {secret.filename}:{secret.line_number}: {secret.type}")
        print("Remove the secret (and rotate it if it was real). A false positive: add an inline\n"
              "`pragma: allowlist secret` comment, or `make secrets-baseline` and label it in the audit.")
    unaudited = [secret for _, secret in known if secret.is_secret is not False]
    if unaudited:
        failed = True
        print(f"detect-secrets: {len(unaudited)} entr(y/ies) of {BASELINE} not audited as false positives:")
        for secret in unaudited:
            verdict = "marked a real secret" if secret.is_secret else "not audited"
            print(f"  {secret.filename}:{secret.line_number}: {secret.type} ({verdict})")
        print(f"Run `.venv/bin/detect-secrets audit {BASELINE}`; a real secret must be removed and rotated.")
    if not failed:
        print(f"detect-secrets: no new secrets in {len(targets)} files (against {BASELINE})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
