#!/usr/bin/env bash
# A formation on this machine, for trying it out: N `mediator serve` processes
# (3 by default) sharing one store, on 127.0.0.1:8081... (QUIC on 4431...),
# each its own instance; with --nginx, nginx-formation.conf in front of them
# on 127.0.0.1:8080. Ctrl-C stops them all (each retires from the formation).
#
#   examples/deploy/formation/local.sh                  # 3 instances on sqlite:./formation.db
#   INSTANCES=2 MEDIATOR_STORE=mysql://root@127.0.0.1:3306/test examples/deploy/formation/local.sh
#   examples/deploy/formation/local.sh --nginx          # and nginx on :8080 (run as root)
#
# Then: mediator instances --url http://127.0.0.1:8081
#       mediator echo-node --url http://127.0.0.1:8081,http://127.0.0.1:8082 ...
#
# MEDIATOR is the binary [default: mediator on PATH]; MEDIATOR_SECRET the
# formation's secret [default: a new random one, printed].
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mediator="${MEDIATOR:-mediator}"
instances="${INSTANCES:-3}"
store="${MEDIATOR_STORE:-sqlite:./formation.db}"
with_nginx=no
[ "${1:-}" = "--nginx" ] && with_nginx=yes
if [ -z "${MEDIATOR_SECRET:-}" ]; then
    MEDIATOR_SECRET="$(head -c 32 /dev/urandom | base64)"
    echo "MEDIATOR_SECRET=$MEDIATOR_SECRET"
fi
export MEDIATOR_SECRET

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait || true
}
trap stop INT TERM EXIT

for i in $(seq 1 "$instances"); do
    "$mediator" serve \
        --store "$store" \
        --instance-id "hub-$i" \
        --listen "127.0.0.1:808$i" \
        --peer-url "http://127.0.0.1:808$i" \
        --quic-listen "127.0.0.1:443$i" \
        --trusted-proxy 127.0.0.1/32 &
    pids+=("$!")
done

if [ "$with_nginx" = yes ]; then
    nginx -c "$here/../nginx-formation.conf" -g 'daemon off;' &
    pids+=("$!")
fi

sleep 1
"$mediator" instances --url http://127.0.0.1:8081 || true
wait
