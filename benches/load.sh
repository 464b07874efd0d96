#!/usr/bin/env bash
# Load test of a running Healporium with wrk: read-by-id and create throughput.
# Usage: benches/load.sh [BASE_URL] [DURATION]   (default http://127.0.0.1:8080/fhir, 10s)
# Start the server first, e.g. `cargo run --release -- serve`. Needs wrk (apt-get install wrk).
set -euo pipefail
BASE="${1:-http://127.0.0.1:8080/fhir}"
DURATION="${2:-10s}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ID=$(curl -sf -X POST "$BASE/Patient" -H 'Content-Type: application/fhir+json' \
       -d '{"resourceType":"Patient","name":[{"family":"Load"}],"gender":"other"}' \
     | sed -E 's/.*"id":"([^"]+)".*/\1/')
echo "== read-by-id ($BASE/Patient/$ID)"
wrk -t2 -c32 -d"$DURATION" --latency "$BASE/Patient/$ID"
echo "== create ($BASE/Patient)"
wrk -t2 -c16 -d"$DURATION" --latency -s "$HERE/create.lua" "$BASE/Patient"
