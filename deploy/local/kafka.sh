#!/usr/bin/env bash
# Start, stop or inspect the local Kafka broker (KRaft, 127.0.0.1:9092, data in .local/kafka).
#   deploy/local/kafka.sh start|stop|status|fetch
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
exec "${root}/.venv/bin/python" -m circadia_dev.devstack.kafka "$@"
