#!/usr/bin/env bash
# gitleaks over what git could commit: the tracked files as they are now, and untracked files
# that are not ignored. Ignored runtime state is left out on purpose: .local/ holds the local
# stack's generated dev signing key and logs, .venv/ and .cache/ third-party files, and none of it
# can be committed by mistake (the history scan, `gitleaks git`, would still report it if it were).
# Findings are redacted. Usage: tools/secrets/gitleaks-worktree.sh [gitleaks binary]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
gitleaks="$(realpath "${1:-$root/.venv/bin/gitleaks}")"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT

cd "$root"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' name; do if [ -f "$name" ]; then printf '%s\0' "$name"; fi; done \
    | tar --null --files-from=- -cf - | tar -xf - -C "$tree"
cd "$tree"
"$gitleaks" dir --redact --no-banner --config "$root/.gitleaks.toml" .
