#!/usr/bin/env bash
# The project's tests: the whole workspace on SQLite (the store tests also
# cover PostgreSQL), then the daemon's integration suite again with every
# daemon and engine on PostgreSQL (SLUICE_TEST_STORE=postgres). Each test
# makes its own database and drops it, so tests run in parallel.
#
# PostgreSQL is found at $SLUICE_TEST_PG_URL (default
# postgres://root@127.0.0.1:5432/postgres). When it does not answer the
# PostgreSQL half is skipped with a notice, unless CI=true: then the run fails
# and says how to start it. Extra arguments go to both cargo test runs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace "$@"

url="${SLUICE_TEST_PG_URL:-postgres://root@127.0.0.1:5432/postgres}"
pg_answers() {
  if command -v pg_isready >/dev/null; then
    pg_isready -q -d "$url"
  elif command -v psql >/dev/null; then
    psql "$url" -qtAc 'select 1' >/dev/null 2>&1
  else
    # No client tools: at least the default port must accept a connection.
    timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5432' 2>/dev/null
  fi
}
if ! pg_answers; then
  msg="PostgreSQL at $url does not answer"
  if [ "${CI:-}" = "true" ]; then
    echo "error: $msg; start it (Debian: service postgresql start) or point SLUICE_TEST_PG_URL at one" >&2
    exit 1
  fi
  echo "notice: $msg; the PostgreSQL half of the tests is skipped" >&2
  exit 0
fi
SLUICE_TEST_STORE=postgres cargo test -p sluice-daemon --tests "$@"
