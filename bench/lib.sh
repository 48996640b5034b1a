# Shared by the bench scripts: `bench_setup NAME` makes $WORK (removed on exit) and
# $RESULTS (kept), kills every PID in $PIDS on exit; free_port and wait_http helpers.
bench_setup() {
  WORK="$(mktemp -d)"
  RESULTS="$BENCH_DIR/results/${1:+$1-}$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$RESULTS"
  PIDS=()
  trap bench_cleanup EXIT
  # Several servers run side by side: each admin listener (/metrics) on a port of its own.
  export PORTCULLIS_ADMIN__LISTEN=127.0.0.1:0
}
bench_cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# The upstream: nginx answering a small JSON body on $UP (2 workers, like every other process
# here), and nginx as a plain reverse proxy to it on $NGX.
start_upstream() {
  UP=$(free_port); NGX=$(free_port)
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$UP; location / { default_type application/json; return 200 '{"items":[]}'; } }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
  nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$UP/"
}

# `token_pool PORT CLIENT_ID SECRET N`: N distinct access tokens, one per line.
token_pool() {
  python3 - "$@" <<'PY'
import base64, http.client, json, sys
port, cid, secret, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
auth = base64.b64encode(f"{cid}:{secret}".encode()).decode()
conn = http.client.HTTPConnection("127.0.0.1", int(port))
for _ in range(n):
    conn.request("POST", "/oauth2/token", "grant_type=client_credentials",
                 {"Authorization": "Basic " + auth, "Content-Type": "application/x-www-form-urlencoded"})
    print(json.loads(conn.getresponse().read())["access_token"])
PY
}
