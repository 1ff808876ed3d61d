#!/usr/bin/env bash
# Install the Debian packages the local stack runs, when their commands are missing:
#   redis-server  (Redis 7, package redis-server)
#   prometheus, promtool  (Prometheus 2.42, package prometheus)
#   chromium  (Debian's Chromium, driven by Playwright in the results page's browser tests)
# Called by circadia_dev.devstack on first use; safe to run again (does nothing when present).
set -euo pipefail

declare -A package_of=( [redis-server]=redis-server [redis-cli]=redis-tools [prometheus]=prometheus [promtool]=prometheus
                        [chromium]=chromium )
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
# Debian's packages start system-wide servers (redis on 6379, prometheus on 9090 and its node
# exporter); the project runs its own instances on loopback, so stop those if they started.
if command -v service >/dev/null; then
  for unit in redis-server prometheus prometheus-node-exporter; do
    [[ " ${missing[*]} " == *" ${unit%%-node-exporter} "* ]] && $sudo service "$unit" stop >/dev/null 2>&1 || true
  done
fi
