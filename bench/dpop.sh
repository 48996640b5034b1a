#!/usr/bin/env bash
# Gateway throughput with DPoP-bound tokens against bearer tokens, one run, interleaved
# rounds. Bearer: a pool of client-credentials tokens (the verified-token cache makes
# repeats cheap). Bearer-nocache: the same tokens through a second gateway with the cache
# off, so every request pays one ES256 verification (as every DPoP request pays one for
# its proof). DPoP: DPoP-bound tokens, each request with a fresh proof (signed
# before the timed run by `portcullis-loadgen dpop-proofs`; the gateway verifies the proof's
# ES256 signature, its claims, `ath`, the key thumbprint against `cnf.jkt`, and spends its
# jti in the in-memory replay cache); dpop-eddsa: the same with Ed25519 client keys. Needs wrk
# and nginx (apt-get install -y wrk nginx-light).
#
#   bench/dpop.sh          # DURATION=10 CONNECTIONS=32 ROUNDS=3 POOL=2000 PROOFS=150000 by default
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
ROUNDS="${ROUNDS:-3}"
POOL="${POOL:-2000}"
PROOFS="${PROOFS:-150000}"
export BENCH_DIR
for bin in wrk nginx; do
  command -v "$bin" >/dev/null || { echo "$bin is required: apt-get install -y wrk nginx-light" >&2; exit 1; }
done
cargo build --release --locked -p portcullis-server -p portcullis-loadgen --manifest-path "$ROOT/Cargo.toml" >&2

. "$BENCH_DIR/lib.sh"
bench_setup dpop
start_upstream
PORT=$(free_port); GW=$(free_port); PORT2=$(free_port); GW2=$(free_port)
config() { # port gateway-port cache-size
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
issuer = "http://127.0.0.1:$PORT"
data_dir = "$WORK/pc"
[log]
level = "warn"
[rate_limit]
enabled = false
[dpop]
# Proofs are made before each timed run; give them time to be used.
proof_lifetime = "5m"
[gateway]
listen = "127.0.0.1:$2"
token_cache_size = $3
[[gateway.routes]]
name = "items"
path_prefix = "/api"
upstreams = ["http://127.0.0.1:$UP"]
auth = "jwt"
audiences = ["https://api.example.com"]
scopes_all = ["items:read"]
TOML
}
config "$PORT" "$GW" 10000 >"$WORK/pc.toml"
config "$PORT2" "$GW2" 0 >"$WORK/pc2.toml"
PORTCULLIS_SERVER__DATA_DIR="$WORK/pc" "$ROOT/target/release/portcullis" client create --name bench \
  --grant client_credentials --scope items:read --audience https://api.example.com --json >"$WORK/client.json" 2>/dev/null
"$ROOT/target/release/portcullis" --config "$WORK/pc.toml" serve >"$RESULTS/portcullis.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PORT/healthz"
"$ROOT/target/release/portcullis" --config "$WORK/pc2.toml" serve >"$RESULTS/portcullis-nocache.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PORT2/healthz"
ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_id"])' "$WORK/client.json")
SECRET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_secret"])' "$WORK/client.json")
token_pool "$PORT" "$ID" "$SECRET" "$POOL" >"$WORK/tokens.txt"

proofs() { # count [alg]
  "$ROOT/target/release/portcullis-loadgen" dpop-proofs --token-url "http://127.0.0.1:$PORT/oauth2/token" \
    --client-id "$ID" --client-secret "$SECRET" --tokens "$POOL" --count "$1" --alg "${2:-ES256}" \
    --url "http://127.0.0.1:$GW/api/items" --out "$WORK/proofs.txt"
}
run() { # scenario
  local out
  if [[ "$1" == dpop* ]]; then
    out=$(PROOFS="$WORK/proofs.txt" WRK_THREADS=2 wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$BENCH_DIR/dpop.lua" \
          "http://127.0.0.1:$GW" | tail -1)
  else
    local gw=$GW
    [[ "$1" == bearer-nocache ]] && gw=$GW2
    out=$(TOKENS="$WORK/tokens.txt" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$BENCH_DIR/tokens.lua" \
          "http://127.0.0.1:$gw" | tail -1)
  fi
  echo "{\"scenario\":\"$1\",\"round\":$ROUND,${out#\{}" | tee -a "$RESULTS/results.jsonl"
}
# A correctness check first: one DPoP request must pass.
proofs 1
read -r T P <"$WORK/proofs.txt"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: DPoP $T" -H "DPoP: $P" "http://127.0.0.1:$GW/api/items")
[[ "$code" == 200 ]] || { echo "a valid DPoP request got $code" >&2; exit 1; }
ROUND=0
proofs 20000
DURATION=2 run bearer >/dev/null
DURATION=2 run bearer-nocache >/dev/null
DURATION=2 run dpop >/dev/null
for ROUND in $(seq "$ROUNDS"); do
  run bearer
  run bearer-nocache
  proofs "$PROOFS"
  run dpop
  proofs "$PROOFS" EdDSA
  run dpop-eddsa
done
echo "results in $RESULTS" >&2
