#!/usr/bin/env bash
# One instance on SQLite versus two instances on PostgreSQL + Redis, in one run, rounds
# interleaved: client_credentials token issuance (`token`: a client lookup in the store and
# an ES256 signature per request) and gateway throughput (`gateway`: JWT route, in-process
# verification, no store on the request path). For the two instances the load is split in
# two wrk processes (half the connections each) and their rates added. Rate limits are off in
# every scenario (bench/overhead.sh measures them), so the ratio is what the storage and the
# revocation bus cost. Needs wrk, nginx, PostgreSQL and Redis (PG_URL, REDIS_URL).
# Loopback only; every load step is bounded in time.
#
#   bench/cluster.sh     # DURATION=10 CONNECTIONS=32 ROUNDS=3 by default
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
ROUNDS="${ROUNDS:-3}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export BENCH_DIR
for bin in wrk nginx psql redis-cli; do
  command -v "$bin" >/dev/null || { echo "$bin is required" >&2; exit 1; }
done
cargo build --release --locked -p portcullis-server --manifest-path "$ROOT/Cargo.toml" >&2

. "$BENCH_DIR/lib.sh"
bench_setup cluster
start_upstream
DB="portcullis_bench_$$"
psql "$PG_URL" -qc "CREATE DATABASE $DB" >/dev/null
trap 'bench_cleanup; psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
PG_DB_URL="${PG_URL%/*}/$DB"
head -c 32 /dev/urandom | base64 >"$WORK/master.key"
chmod 600 "$WORK/master.key"

ISSUER="http://127.0.0.1:9"
start_portcullis() { # name data-dir extra-env...
  local name=$1 dir=$2 port gw
  shift 2
  port=$(free_port); gw=$(free_port)
  cat >"$WORK/$name.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
issuer = "$ISSUER"
data_dir = "$dir"
[keys]
master_key_file = "$WORK/master.key"
[log]
level = "warn"
[rate_limit]
enabled = false
[gateway]
listen = "127.0.0.1:$gw"
[[gateway.routes]]
name = "items"
path_prefix = "/api"
upstreams = ["http://127.0.0.1:$UP"]
auth = "jwt"
audiences = ["https://api.example.com"]
scopes_all = ["invoices:read"]
TOML
  env "$@" "$ROOT/target/release/portcullis" --config "$WORK/$name.toml" serve >"$RESULTS/portcullis-$name.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/healthz"
  eval "AS_$name=$port GW_$name=$gw PID_$name=$!"
}
PG_ENV=(PORTCULLIS_DATABASE__URL="$PG_DB_URL" PORTCULLIS_REDIS__URL="$REDIS_URL" PORTCULLIS_REDIS__KEY_PREFIX="portcullis-bench:$$:")
start_portcullis sqlite "$WORK/sqlite"
start_portcullis pg1 "$WORK/pg1" "${PG_ENV[@]}"
start_portcullis pg2 "$WORK/pg2" "${PG_ENV[@]}"

client() { # data-dir extra-env... → "id secret"
  local dir=$1
  shift
  env PORTCULLIS_SERVER__DATA_DIR="$dir" PORTCULLIS_KEYS__MASTER_KEY_FILE="$WORK/master.key" "$@" \
    "$ROOT/target/release/portcullis" client create --name bench --grant client_credentials \
    --scope invoices:read --audience https://api.example.com --json 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["client_id"], d["client_secret"])'
}
read -r SQ_ID SQ_SECRET < <(client "$WORK/sqlite")
read -r PG_ID PG_SECRET < <(client "$WORK/pg1" "${PG_ENV[@]}")
SQ_BASIC=$(printf '%s:%s' "$SQ_ID" "$SQ_SECRET" | base64 -w0)
PG_BASIC=$(printf '%s:%s' "$PG_ID" "$PG_SECRET" | base64 -w0)
token_pool "$AS_sqlite" "$SQ_ID" "$SQ_SECRET" 2000 >"$WORK/tokens-sqlite.txt"
token_pool "$AS_pg1" "$PG_ID" "$PG_SECRET" 2000 >"$WORK/tokens-pg.txt"
T=$(head -1 "$WORK/tokens-pg.txt")
for gw in "$GW_pg1" "$GW_pg2"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $T" "http://127.0.0.1:$gw/api/items")
  [[ "$code" == 200 ]] || { echo "gateway $gw answered $code to a token of the other instance" >&2; exit 1; }
done

# CPU seconds (user + system) used so far by the processes of a group: where the time goes.
cpu() { # group
  local pids
  case "$1" in
    sqlite) pids="$PID_sqlite" ;;
    pg2) pids="$PID_pg1 $PID_pg2" ;;
    postgres) pids=$(pgrep -f "postgres: .* $DB " || true) ;;
    redis) pids=$(pgrep -x redis-server || true) ;;
  esac
  python3 - $pids <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
total = 0
for pid in sys.argv[1:]:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    except OSError:
        pass
print(total / hz)
PY
}

load() { # connections threads url script basic tokens → JSON line
  BASIC="$5" TOKENS="$6" wrk -t"$2" -c"$1" -d"${DURATION}s" -s "$BENCH_DIR/$4" "$3" | tail -1
}
run() { # workload backend
  local out before_app before_pg before_redis
  before_app=$(cpu "$2"); before_pg=$(cpu postgres); before_redis=$(cpu redis)
  case "$1/$2" in
    token/sqlite) out=$(load "$CONNECTIONS" 2 "http://127.0.0.1:$AS_sqlite/oauth2/token" token.lua "$SQ_BASIC" "") ;;
    gateway/sqlite) out=$(load "$CONNECTIONS" 2 "http://127.0.0.1:$GW_sqlite" tokens.lua "" "$WORK/tokens-sqlite.txt") ;;
    token/pg2 | gateway/pg2)
      local half=$((CONNECTIONS / 2)) a
      if [[ $1 == token ]]; then
        load "$half" 1 "http://127.0.0.1:$AS_pg1/oauth2/token" token.lua "$PG_BASIC" "" >"$WORK/a" &
        a=$!
        load "$half" 1 "http://127.0.0.1:$AS_pg2/oauth2/token" token.lua "$PG_BASIC" "" >"$WORK/b"
      else
        load "$half" 1 "http://127.0.0.1:$GW_pg1" tokens.lua "" "$WORK/tokens-pg.txt" >"$WORK/a" &
        a=$!
        load "$half" 1 "http://127.0.0.1:$GW_pg2" tokens.lua "" "$WORK/tokens-pg.txt" >"$WORK/b"
      fi
      wait "$a"
      out=$(python3 - "$WORK/a" "$WORK/b" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
n = a["requests"] + b["requests"]
out = {"requests": n, "rps": round(a["rps"] + b["rps"], 1)}
for k in ("p50_ms", "p90_ms", "p99_ms"):
    out[k] = round(max(a[k], b[k]), 3)  # the worse of the two
out["socket_errors"] = a["socket_errors"] + b["socket_errors"]
out["non_2xx"] = a["non_2xx"] + b["non_2xx"]
print(json.dumps(out))
PY
) ;;
  esac
  local spent
  spent=$(python3 -c 'import sys; a=[float(x) for x in sys.argv[1:]]; print("\"cpu_s\":{\"portcullis\":%.1f,\"postgres\":%.1f,\"redis\":%.1f}" % (a[0]-a[1], a[2]-a[3], a[4]-a[5]))' \
    "$(cpu "$2")" "$before_app" "$(cpu postgres)" "$before_pg" "$(cpu redis)" "$before_redis")
  echo "{\"workload\":\"$1\",\"backend\":\"$2\",\"round\":$ROUND,$spent,${out#\{}" | tee -a "$RESULTS/results.jsonl"
}
ROUND=0
for w in token gateway; do for b in sqlite pg2; do DURATION=3 run "$w" "$b" >/dev/null; done; done
for ROUND in $(seq "$ROUNDS"); do
  for w in token gateway; do for b in sqlite pg2; do run "$w" "$b"; done; done
done
python3 - "$RESULTS/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for w in ("token", "gateway"):
    med = {b: statistics.median(r["rps"] for r in rows if r["workload"] == w and r["backend"] == b) for b in ("sqlite", "pg2")}
    print(f"{w:8} sqlite x1 {med['sqlite']:9.0f} rps   postgres+redis x2 {med['pg2']:9.0f} rps   ratio {med['pg2'] / med['sqlite']:.2f}")
    for b in ("sqlite", "pg2"):
        runs = [r for r in rows if r["workload"] == w and r["backend"] == b and r["round"] > 0]
        n = sum(r["requests"] for r in runs)
        per = {k: 1e6 * sum(r["cpu_s"][k] for r in runs) / n for k in ("portcullis", "postgres", "redis")}
        print(f"         {b:7} CPU µs per request: portcullis {per['portcullis']:.0f}, postgres {per['postgres']:.0f}, redis {per['redis']:.0f}")
PY
echo "results in $RESULTS" >&2
