#!/usr/bin/env bash
# Sign-in benchmarks: full authorization-code round trips (authorize through the SSO session
# + code exchange with PKCE) and the refresh-token grant (rotating), Portcullis vs node
# oidc-provider, interleaved in one run; then Portcullis logins/s against argon2id's bound.
# Needs node + npm. Traffic stays on 127.0.0.1; every step is bounded in time.
#
#   bench/signin.sh            # DURATION=10 CONCURRENCY=16 ROUNDS=2 by default
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-16}"
ROUNDS="${ROUNDS:-2}"
LOG_LEVEL="${LOG_LEVEL:-warn}"

cargo build --release --locked -p portcullis-server -p portcullis-loadgen --manifest-path "$ROOT/Cargo.toml" >&2
(cd "$BENCH_DIR/peer" && npm ci --no-audit --no-fund >/dev/null)

. "$BENCH_DIR/lib.sh"
bench_setup signin

REDIRECT="http://127.0.0.1:9/cb"
PASSWORD="correct horse battery staple"
PC="$ROOT/target/release/portcullis"
LOADGEN="$ROOT/target/release/portcullis-loadgen"

# Portcullis: SQLite, default argon2id parameters, a first-party public app (no consent page).
PC_PORT=$(free_port)
export PORTCULLIS_SERVER__LISTEN="127.0.0.1:$PC_PORT" PORTCULLIS_SERVER__DATA_DIR="$WORK/pc" \
       PORTCULLIS_LOG__FORMAT=json PORTCULLIS_LOG__LEVEL="$LOG_LEVEL" \
       PORTCULLIS_RATE_LIMIT__ENABLED=false  # the peer has no limits; one load generator is what they stop
echo "$PASSWORD" | "$PC" user create bench --password-stdin >/dev/null 2>&1
PC_APP=$("$PC" client create --name bench-app --public --first-party --grant authorization_code,refresh_token \
         --scope "openid offline_access" --redirect-uri "$REDIRECT" --json 2>/dev/null \
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
"$PC" serve >"$RESULTS/portcullis.log" 2>&1 &
PIDS+=($!); PC_PID=$!
wait_http "http://127.0.0.1:$PC_PORT/healthz"

# oidc-provider: the same shape (public client, PKCE, ES256, rotating refresh tokens).
OP_PORT=$(free_port)
node "$BENCH_DIR/peer/server.mjs" "$OP_PORT" bench "bench-secret-0123456789abcdef0123456789abcdef" jwt \
     >"$RESULTS/oidc-provider.log" 2>&1 &
PIDS+=($!); OP_PID=$!
wait_http "http://127.0.0.1:$OP_PORT/.well-known/openid-configuration"

run() { # scenario provider base client concurrency
  "$LOADGEN" "$1" --provider "$2" --base "$3" --client-id "$4" --redirect "$REDIRECT" \
     --username bench --password "$PASSWORD" --concurrency "$5" --duration "$DURATION" \
     | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['round']=$ROUND; print(json.dumps(d))" \
     | tee -a "$RESULTS/results.jsonl"
}

ROUND=0  # warm-up
DURATION=3 run code portcullis "http://127.0.0.1:$PC_PORT" "$PC_APP" 4 >/dev/null
DURATION=3 run code oidc-provider "http://127.0.0.1:$OP_PORT" app 4 >/dev/null
for ROUND in $(seq "$ROUNDS"); do
  run code portcullis "http://127.0.0.1:$PC_PORT" "$PC_APP" "$CONCURRENCY"
  run code oidc-provider "http://127.0.0.1:$OP_PORT" app "$CONCURRENCY"
  run refresh portcullis "http://127.0.0.1:$PC_PORT" "$PC_APP" "$CONCURRENCY"
  run refresh oidc-provider "http://127.0.0.1:$OP_PORT" app "$CONCURRENCY"
done
# Logins are bounded by argon2id: one verification per login, `cores` at a time.
ROUND=1 run login portcullis "http://127.0.0.1:$PC_PORT" "$PC_APP" 8
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "{\"rss_kb\":{\"portcullis\":$(rss_kb $PC_PID),\"oidc-provider\":$(rss_kb $OP_PID)},\"cores\":$(nproc)}" \
  | tee "$RESULTS/rss.json"
echo "results in $RESULTS" >&2
