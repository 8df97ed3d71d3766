#!/usr/bin/env bash
# Counts the user-space instructions `mediator serve` spends per mediated
# request (unicast, 1 KiB body echoed by an HTTP node), under valgrind's
# callgrind. Unlike req/s on a shared machine, the count repeats to within a
# fraction of a percent from run to run, so it compares two builds exactly.
# Kernel time (the socket calls) is not counted.
#
#   scripts/instructions-per-request.sh [MEDIATOR_BINARY] [REQUESTS]
#   NODES=100000 scripts/instructions-per-request.sh   # with that many more nodes registered
#   PROFILE_DIR=/tmp/cg scripts/instructions-per-request.sh   # keep the dumps
#   SERVE_ARGS='--pass-through false' scripts/instructions-per-request.sh   # more serve flags
#
# Nothing is counted until the nodes are registered and the warm-up is done.
# Needs valgrind, curl and python3, and release builds of `mediator` and of
# the load harness, which provides the echo node:
# `cargo build --release --bin mediator --bin mediator-bench`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(realpath "${1:-$root/target/release/mediator}")"
requests="${2:-2000}"
bench="$(dirname "$bin")/mediator-bench"
[ -x "$bench" ] || bench="$root/target/release/mediator-bench"
for tool in valgrind callgrind_control curl python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export MEDIATOR_SECRET="instructions-per-request-secret-0123456789"

"$bench" echo-node --ports 1 >echo.out &
pids+=($!)
for _ in $(seq 50); do grep -q 'http://' echo.out && break; sleep 0.1; done
echo_url="$(grep -o 'http://[0-9.:]*' echo.out | head -1)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.out" \
  "$bin" serve --listen "127.0.0.1:$port" --store memory ${SERVE_ARGS:-} 2>mediator.log &
mediator=$!
pids+=($mediator)
for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done

admin="$("$bin" token --admin)"
caller="$("$bin" token --node bench/caller)"
curl -sf -o /dev/null -H "authorization: Bearer $admin" \
  -d "{\"group\":\"bench\",\"name\":\"echo\",\"url\":\"$echo_url\",\"ttl\":86400}" \
  "http://127.0.0.1:$port/register"

load() {
  python3 - "$port" "$caller" "$1" <<'EOF'
import http.client, sys, threading
port, token, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = b"0123456789abcdef" * 64
failures = []
def run(count):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        conn.request("POST", "/one/bench/echo/echo", body,
                     {"authorization": "Bearer " + token,
                      "content-type": "application/octet-stream"})
        reply = conn.getresponse()
        if reply.status != 200 or reply.read() != body:
            failures.append(reply.status)
threads = [threading.Thread(target=run, args=(n // 4,)) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
if failures:
    sys.exit(f"{len(failures)} requests failed, first status {failures[0]}")
EOF
}

# NODES other nodes in 100 groups, registered while nothing is counted.
python3 - "$port" "$admin" "$echo_url" "${NODES:-0}" <<'EOF2'
import http.client, sys, threading, json
port, token, url, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
def run(start, step):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(start, n, step):
        body = json.dumps({"group": f"g{i % 100}", "name": f"n{i}", "url": url, "ttl": 86400})
        conn.request("POST", "/register", body, {"authorization": "Bearer " + token, "content-type": "application/json"})
        r = conn.getresponse(); r.read()
        if r.status != 200: sys.exit(f"register failed {r.status}")
threads = [threading.Thread(target=run, args=(k, 4)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
EOF2
callgrind_control -i on "$mediator" >/dev/null 2>&1  # instrument from here
load 200
callgrind_control -z "$mediator" >/dev/null 2>&1  # count from here
load "$requests"
callgrind_control -d "$mediator" >/dev/null 2>&1  # dump what was counted
total=0
for dump in "$work"/cg.out.*; do
  ir="$(grep -m1 '^summary:' "$dump" | awk '{print $2}')"
  total=$((total + ir))
done
echo "$(basename "$bin"): $total instructions for $requests requests, $((total / requests)) per request"
# PROFILE_DIR=DIR keeps the callgrind dumps, for callgrind_annotate.
if [ -n "${PROFILE_DIR:-}" ]; then
  mkdir -p "$PROFILE_DIR"
  cp "$work"/cg.out.* "$PROFILE_DIR"/
fi
