#!/usr/bin/env bash
# What the gateway's optional layers cost, in one run, interleaved: the same JWT route and
# token pool through gateways with nothing on ("off"; the audit trail stored, the default),
# the same without the stored audit trail ("noaudit": [audit] store = false, so every
# allowed request's audit event stops at the detectors instead of reaching SQLite), with
# only the per-request access events left out ("exclude": [audit] exclude = ["gateway.allowed"]), rate limiting in memory ("memory":
# two rules per request, per IP and per client, quotas high enough never to refuse, so only
# the cost of checking is measured), rate limiting in Redis ("redis", when Redis answers on
# 127.0.0.1:6379), and Cedar policies ("policies": the shipped examples plus 100 route
# policies, one of which allows the request). Needs wrk and nginx (apt-get install -y wrk
# nginx-light). Loopback only; every load step is bounded in time.
#
#   bench/overhead.sh           # DURATION=10 CONNECTIONS=32 ROUNDS=3 POOL=2000 by default
#   ONLY="off noaudit exclude" bench/overhead.sh   # a subset of the scenarios
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
ROUNDS="${ROUNDS:-3}"
POOL="${POOL:-2000}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export BENCH_DIR
for bin in wrk nginx; do
  command -v "$bin" >/dev/null || { echo "$bin is required: apt-get install -y wrk nginx-light" >&2; exit 1; }
done
cargo build --release --locked -p portcullis-server --manifest-path "$ROOT/Cargo.toml" >&2

. "$BENCH_DIR/lib.sh"
bench_setup overhead
start_upstream

ISSUER_PORT=$(free_port)
start_portcullis() { # name limits-toml
  local port gw
  port=$(free_port); gw=$(free_port)
  [[ "$1" == off ]] && port=$ISSUER_PORT
  cat >"$WORK/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
issuer = "http://127.0.0.1:$ISSUER_PORT"
data_dir = "$WORK/pc"
[log]
level = "warn"
$2
[gateway]
listen = "127.0.0.1:$gw"
[[gateway.routes]]
name = "items"
path_prefix = "/api"
upstreams = ["http://127.0.0.1:$UP"]
auth = "jwt"
audiences = ["https://api.example.com"]
scopes_all = ["items:read"]
rate_limits = [
  { name = "per-ip", by = ["ip"], requests = 100000000, per = "1s" },
  { name = "per-client", by = ["client_id"], requests = 100000000, per = "1s" },
]
TOML
  "$ROOT/target/release/portcullis" --config "$WORK/$1.toml" serve >"$RESULTS/portcullis-$1.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/healthz"
  eval "GW_$1=$gw"
}
PORTCULLIS_SERVER__DATA_DIR="$WORK/pc" "$ROOT/target/release/portcullis" client create --name bench \
  --grant client_credentials --scope items:read --audience https://api.example.com --json >"$WORK/client.json" 2>/dev/null
OFF=$'[rate_limit]\nenabled = false'
start_portcullis off "$OFF"
start_portcullis noaudit "$OFF
[audit]
store = false"
start_portcullis exclude "$OFF
[audit]
exclude = [\"gateway.allowed\"]"
start_portcullis memory $'[rate_limit]\nbackend = "memory"'
# Policies: the shipped examples, 100 policies on other routes, one that allows this one.
mkdir -p "$WORK/policies"
cp "$ROOT"/policies/*.cedar "$ROOT/policies/schema.cedarschema" "$WORK/policies/"
for i in $(seq 100); do
  echo "permit (principal, action, resource == Route::\"r$i\") when { principal in Role::\"admin\" };"
done >"$WORK/policies/filler.cedar"
echo 'permit (principal, action == Action::"GET", resource == Route::"items") when { context.scopes.contains("items:read") };' \
  >"$WORK/policies/items.cedar"
start_portcullis policies "$OFF
[authorization]
policies_dir = \"$WORK/policies\""
SCENARIOS=(off noaudit exclude memory policies)
if redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  start_portcullis redis "[rate_limit]
backend = \"redis\"
redis_url = \"$REDIS_URL\"
key_prefix = \"portcullis-bench:$$:\"
fail = \"closed\""
  SCENARIOS+=(redis)
else
  echo "no Redis at $REDIS_URL: skipping the Redis scenario" >&2
fi
# ONLY="off noaudit" runs just those scenarios.
if [[ -n "${ONLY:-}" ]]; then read -ra SCENARIOS <<<"$ONLY"; fi
ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_id"])' "$WORK/client.json")
SECRET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_secret"])' "$WORK/client.json")
token_pool "$ISSUER_PORT" "$ID" "$SECRET" "$POOL" >"$WORK/tokens.txt"
T1=$(head -1 "$WORK/tokens.txt")
for s in "${SCENARIOS[@]}"; do
  port_var="GW_$s"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $T1" "http://127.0.0.1:${!port_var}/api/items")
  [[ "$code" == 200 ]] || { echo "$s answered $code to a valid token" >&2; exit 1; }
done

run() { # scenario
  local out port_var="GW_$1"
  out=$(TOKENS="$WORK/tokens.txt" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$BENCH_DIR/tokens.lua" \
        "http://127.0.0.1:${!port_var}" | tail -1)
  echo "{\"scenario\":\"$1\",\"round\":$ROUND,${out#\{}" | tee -a "$RESULTS/results.jsonl"
}
ROUND=0
for s in "${SCENARIOS[@]}"; do DURATION=3 run "$s" >/dev/null; done
for ROUND in $(seq "$ROUNDS"); do
  for s in "${SCENARIOS[@]}"; do run "$s"; done
done
echo "results in $RESULTS" >&2
