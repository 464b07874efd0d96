#!/usr/bin/env bash
# Load test of any running Healporium with wrk: read by id, search, create, and a mixed load
# (70 % reads, 20 % searches, 10 % creates). Bounded: each run lasts DURATION and stops.
# Usage: benches/load.sh [BASE_URL] [DURATION] [CONNECTIONS]
#   default http://127.0.0.1:8080/fhir, 10s, 16. TOKEN=<bearer token> for a secured server
#   (e.g. a backend service's client_credentials token with system/Patient.cruds).
# Start the server first, e.g. `cargo run --release -- serve`. Needs wrk and curl.
set -euo pipefail
BASE="${1:-http://127.0.0.1:8080/fhir}"
DURATION="${2:-10s}"
CONNECTIONS="${3:-16}"
HERE="$(cd "$(dirname "$0")" && pwd)"
AUTH=()
WRK_AUTH=()
if [ -n "${TOKEN:-}" ]; then
    AUTH=(-H "Authorization: Bearer $TOKEN")
    WRK_AUTH=(-H "Authorization: Bearer $TOKEN")
fi
create() {
    curl -sf -X POST "$BASE/Patient" "${AUTH[@]}" -H 'Content-Type: application/fhir+json' \
        -d "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"$1\"}],\"gender\":\"other\"}" \
        | sed -E 's/.*"id":"([^"]+)".*/\1/'
}
echo "== seeding 100 Patients over 10 family names"
IDS=""
for i in $(seq 1 100); do
    IDS="$IDS${IDS:+,}$(create "LoadFam$((i % 10))")"
done
FAMILIES=$(seq -s, 0 9 | sed 's/\([0-9]\)/LoadFam\1/g')
FIRST="${IDS%%,*}"
echo "== read by id ($CONNECTIONS connections, $DURATION)"
wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "${WRK_AUTH[@]}" "$BASE/Patient/$FIRST"
echo "== search Patient?family=LoadFam3&_count=10 (1 connection, $DURATION)"
wrk -t1 -c1 -d"$DURATION" --latency "${WRK_AUTH[@]}" "$BASE/Patient?family=LoadFam3&_count=10"
echo "== create ($CONNECTIONS connections, $DURATION)"
wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "${WRK_AUTH[@]}" -s "$HERE/create.lua" "$BASE/Patient"
echo "== mixed: 70 % read, 20 % search, 10 % create ($CONNECTIONS connections, $DURATION)"
TOKEN="${TOKEN:-}" IDS="$IDS" FAMILIES="$FAMILIES" \
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$HERE/mixed.lua" "$BASE"
