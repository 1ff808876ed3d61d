#!/usr/bin/env bash
# Vendor the results page's chart library (npm, pinned by package-lock.json) and the stream client
# into web/vendor/, which the fan-out serves and its package ships. Run by `make web` and by the
# fan-out image's build; needs node and npm.
set -euo pipefail
web="$(cd "$(dirname "$0")" && pwd)"
client="${1:-${web}/../../../clients/stream/src/index.js}"
npm ci --prefix "${web}" --no-audit --no-fund --silent
mkdir -p "${web}/vendor"
cp "${web}/node_modules/uplot/dist/uPlot.iife.min.js" "${web}/node_modules/uplot/dist/uPlot.min.css" "${web}/vendor/"
cp "${client}" "${web}/vendor/stream.js"
touch "${web}/vendor/.built"
