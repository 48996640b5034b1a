#!/usr/bin/env bash
# Token endpoint and introspection: Portcullis vs node oidc-provider, same machine, one run,
# scenarios interleaved. Needs: wrk (apt-get install wrk), node + npm. Traffic stays on
# 127.0.0.1 and every load step is bounded in time.
#
#   bench/run.sh            # DURATION=15 CONNECTIONS=16 ROUNDS=2 by default
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
DURATION="${DURATION:-15}"
CONNECTIONS="${CONNECTIONS:-16}"
ROUNDS="${ROUNDS:-2}"
LOG_LEVEL="${LOG_LEVEL:-warn}"
export BENCH_DIR

command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --locked -p portcullis-server --manifest-path "$ROOT/Cargo.toml" >&2
(cd "$BENCH_DIR/peer" && npm ci --no-audit --no-fund >/dev/null)

. "$BENCH_DIR/lib.sh"
bench_setup

# Portcullis
PC_PORT=$(free_port)
export PORTCULLIS_SERVER__LISTEN="127.0.0.1:$PC_PORT" PORTCULLIS_SERVER__DATA_DIR="$WORK/pc" \
       PORTCULLIS_LOG__FORMAT=json PORTCULLIS_LOG__LEVEL="$LOG_LEVEL" \
       PORTCULLIS_RATE_LIMIT__ENABLED=false  # the peer has no limits; one load generator is what they stop
PC="$ROOT/target/release/portcullis"
CREATED=$("$PC" client create --name bench --grant client_credentials --scope "invoices:read invoices:write" \
          --audience https://api.example.com --json 2>/dev/null)
PC_ID=$(echo "$CREATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
PC_SECRET=$(echo "$CREATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
"$PC" serve >"$RESULTS/portcullis.log" 2>&1 &
PIDS+=($!)
PC_PID=$!
wait_http "http://127.0.0.1:$PC_PORT/healthz"

# oidc-provider: one JWT-format instance (tokens), one opaque instance (introspection).
OP_SECRET="bench-secret-0123456789abcdef0123456789abcdef"
OP_PORT=$(free_port); OPQ_PORT=$(free_port)
node "$BENCH_DIR/peer/server.mjs" "$OP_PORT" bench "$OP_SECRET" jwt >"$RESULTS/oidc-provider.log" 2>&1 &
PIDS+=($!)
OP_PID=$!
node "$BENCH_DIR/peer/server.mjs" "$OPQ_PORT" bench "$OP_SECRET" opaque >"$RESULTS/oidc-provider-opaque.log" 2>&1 &
PIDS+=($!)
OPQ_PID=$!
wait_http "http://127.0.0.1:$OP_PORT/.well-known/openid-configuration"
wait_http "http://127.0.0.1:$OPQ_PORT/.well-known/openid-configuration"

basic() { printf '%s:%s' "$1" "$2" | base64 -w0; }
PC_BASIC=$(basic "$PC_ID" "$PC_SECRET"); OP_BASIC=$(basic bench "$OP_SECRET")
token_of() { curl -s -u "$2" -d grant_type=client_credentials -d scope=invoices:read "$1" \
             | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
PC_TOKEN=$(token_of "http://127.0.0.1:$PC_PORT/oauth2/token" "$PC_ID:$PC_SECRET")
OPQ_TOKEN=$(token_of "http://127.0.0.1:$OPQ_PORT/token" "bench:$OP_SECRET")

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
run() { # name url script basic token
  local out
  out=$(BASIC="$4" TOKEN="${5:-}" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$BENCH_DIR/$3" "$2" | tail -1)
  echo "{\"scenario\":\"$1\",\"round\":$ROUND,${out#\{}" | tee -a "$RESULTS/results.jsonl"
}

# Warm up both (JIT, pools, caches).
for ROUND in 0; do
  DURATION=3 run warmup-pc-token "http://127.0.0.1:$PC_PORT/oauth2/token" token.lua "$PC_BASIC" >/dev/null
  DURATION=3 run warmup-op-token "http://127.0.0.1:$OP_PORT/token" token.lua "$OP_BASIC" >/dev/null
done
for ROUND in $(seq "$ROUNDS"); do
  run portcullis/token "http://127.0.0.1:$PC_PORT/oauth2/token" token.lua "$PC_BASIC"
  run oidc-provider/token "http://127.0.0.1:$OP_PORT/token" token.lua "$OP_BASIC"
  run portcullis/introspect "http://127.0.0.1:$PC_PORT/oauth2/introspect" introspect.lua "$PC_BASIC" "$PC_TOKEN"
  run oidc-provider/introspect "http://127.0.0.1:$OPQ_PORT/token/introspection" introspect.lua "$OP_BASIC" "$OPQ_TOKEN"
done
echo "{\"memory_rss_kb\":{\"portcullis\":$(rss_kb $PC_PID),\"oidc-provider\":$(rss_kb $OP_PID),\"oidc-provider-opaque\":$(rss_kb $OPQ_PID)}}" \
  | tee "$RESULTS/memory.json"

python3 "$BENCH_DIR/summarize.py" "$RESULTS"
