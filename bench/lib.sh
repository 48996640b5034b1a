# Shared by the bench scripts: `bench_setup NAME` makes $WORK (removed on exit) and
# $RESULTS (kept), kills every PID in $PIDS on exit; free_port and wait_http helpers.
bench_setup() {
  WORK="$(mktemp -d)"
  RESULTS="$BENCH_DIR/results/${1:+$1-}$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$RESULTS"
  PIDS=()
  trap bench_cleanup EXIT
}
bench_cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
