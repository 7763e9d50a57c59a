#!/usr/bin/env bash
# Instructions per accepted-and-executed webhook run, counted by callgrind.
# Unlike wall-clock figures on a shared 2-core machine, instruction counts
# repeat from run to run, so a change to the intake path can be judged by
# them (issue 16). The load and pipeline are those of
# ../shared/bench/compare_intake.sh: one transform node, limits out of the way.
#
#   scripts/intake-instructions.sh [seconds=20] [conns=16] [out=callgrind.out]
#
# Needs a release build, valgrind and wrk (apt-get install -y valgrind wrk).
# Prints the runs made, the total instructions and the instructions per run
# (the start-up, measured without load, is subtracted); `callgrind_annotate
# --inclusive=yes OUT` then shows where they go. Valgrind runs the daemon
# ~50x slower, so the writer's batches are smaller than at full speed.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-20}"; CONNS="${2:-16}"; OUT="${3:-callgrind.out}"
BIN="${SLUICE_BIN:-$PWD/target/release}"
for tool in valgrind wrk callgrind_annotate python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y valgrind wrk)" >&2; exit 2; }
done
WORK="$(mktemp -d)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/p"
cat > "$WORK/p/deploy-web.yaml" <<'Y'
triggers:
  - webhook: { auth: none }
nodes:
  - id: set
    kind: transform
    output: { repo: "{{ trigger.body.repository.full_name }}", sha: "{{ trigger.body.after }}" }
Y
printf '[limits.global]\nmax_concurrent = 256\n[limits.default]\nrate = "1000000/s"\nburst = 1000000\nmax_concurrent = 256\ndaily_runs = 100000000\n' > "$WORK/sluiced.toml"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One daemon under callgrind: up, `seconds` of load (or none), then stopped.
measure() {
  local secs=$1 out=$2 port st
  port=$(free_port); st="$WORK/st-$secs"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN/sluiced" --config "$WORK/sluiced.toml" \
    --state-dir "$st" --pipelines "$WORK/p" --socket "$WORK/s-$secs.sock" --listen "127.0.0.1:$port" \
    > "$WORK/d-$secs.log" 2>&1 & PID=$!
  for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
  if [ "$secs" != 0 ]; then
    wrk -t1 -c"$CONNS" -d"${secs}s" -s ../shared/bench/webhook.lua "http://127.0.0.1:$port/hooks/deploy-web" >/dev/null
  fi
  kill -INT "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  RUNS=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from runs where state = ?", ("succeeded",)).fetchone()[0])' "$st/sluice.db")
  TOTAL=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
}
measure 0 "$WORK/idle.out"; IDLE=$TOTAL
measure "$DUR" "$OUT"
python3 - "$RUNS" "$TOTAL" "$IDLE" <<'P'
import sys
runs, total, idle = (int(x) for x in sys.argv[1:])
print(f"runs: {runs}  instructions: {total:,} (start-up and stop {idle:,})")
print(f"instructions per accepted-and-executed run: {(total - idle) / max(runs, 1):,.0f}")
P
