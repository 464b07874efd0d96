#!/usr/bin/env bash
# Page loads of the web app under wrk: signs a demo user in through the real pages
# (authorization code with PKCE against the server's own authorization server, curl keeping
# the cookies), then loads each page with that session for DURATION at CONNECTIONS.
# Usage: [PAGES="/app/ /app/bills"] benches/web.sh [ORIGIN] [DURATION] [CONNECTIONS] [USER] [PASSWORD]
# against `healporium serve --demo` (docs/performance.md, "The web app").
set -euo pipefail
ORIGIN=${1:-http://127.0.0.1:8080}
DURATION=${2:-10s}
CONNECTIONS=${3:-8}
USER_NAME=${4:-alice}
PASSWORD=${5:-alice-demo-pw}
jar=$(mktemp)
trap 'rm -f "$jar"' EXIT
authorize=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$ORIGIN/app/signin")
request=$(curl -s -c "$jar" -b "$jar" "$authorize" | grep -o 'name="request" value="[^"]*"' | sed 's/.*value="//;s/"$//')
callback=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' \
  --data-urlencode "request=$request" --data-urlencode "username=$USER_NAME" \
  --data-urlencode "password=$PASSWORD" "$ORIGIN/auth/login")
curl -s -c "$jar" -b "$jar" -o /dev/null "$callback"
session=$(awk '$6 == "hp_at" {print $7}' "$jar")
[ -n "$session" ] || { echo "sign-in failed" >&2; exit 1; }
# the pages to load: PAGES (space-separated paths), else a patient's main pages
read -r -a pages <<< "${PAGES:-/app/ /app/health /app/health/chart.svg?kind=hr&range=year /app/records /app/bills /app/appointments}"
printf '| page | requests/s | p50 | p99 | non-2xx |\n|---|---|---|---|---|\n'
for page in "${pages[@]}"; do
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "Cookie: hp_at=$session" "$ORIGIN$page")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  printf '| `%s` | %s | %s | %s | %s |\n' "$page" "$rps" "$p50" "$p99" "${bad:-0}"
done
