#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration, examples and doc tests.
#
# The store-mysql tests need a MySQL-compatible server; this script starts the
# local MariaDB when it is installed but not running. Set MEDIATOR_SKIP_MYSQL=1
# to skip those tests, or MEDIATOR_TEST_MYSQL_URL to use another server.
set -euo pipefail
cd "$(dirname "$0")/.."

mysql_answers() {
  (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null
}

if [ "${MEDIATOR_SKIP_MYSQL:-0}" != 1 ] && [ -z "${MEDIATOR_TEST_MYSQL_URL:-}" ]; then
  if ! mysql_answers && [ -x /usr/sbin/mariadbd ]; then
    echo "starting MariaDB for the store-mysql tests"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 1 60); do mysql_answers && break; sleep 0.5; done
  fi
  mysql_answers || echo "warning: no MySQL server on 127.0.0.1:3306; the store-mysql tests will say how to start one"
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --no-fail-fast
else
  cargo test --workspace --all-features --lib --bins --tests --no-fail-fast
fi
cargo test --workspace --all-features --doc
# The HTTP transport as a library depends on it by default: without the
# operator's console, whose paths then say the build has none.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run -p mediator-transport-http --lib
else
  cargo test -p mediator-transport-http --lib
fi
