#!/usr/bin/env bash
# Install the Debian packages the local stack runs, when their commands are missing:
#   redis-server  (Redis 7, package redis-server)
# Called by circadia.devstack on first use; safe to run again (does nothing when present).
set -euo pipefail

declare -A package_of=( [redis-server]=redis-server [redis-cli]=redis-tools )
missing=()
for command in "$@"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${package_of[$command]:-$command}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo -n"; else
  echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# Debian's package starts a system-wide redis on 6379; the project runs its own instances.
if [[ " ${missing[*]} " == *" redis-server "* ]] && command -v service >/dev/null; then
  $sudo service redis-server stop >/dev/null 2>&1 || true
fi
