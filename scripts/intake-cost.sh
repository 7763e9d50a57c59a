#!/usr/bin/env bash
# What one accepted-and-executed webhook run costs the daemon (issue 16),
# under the load of ../shared/bench/compare_intake.sh: wrk posting a small
# JSON body to a one-transform pipeline, limits out of the way, durability
# full. Needs a release build and wrk (apt-get install -y wrk).
#
#   scripts/intake-cost.sh cpu [seconds=10] [conns=64]
#       daemon CPU time per run (goal <= 0.06 ms; utime + stime from /proc),
#       with the accepted rate, p99 and RSS; wrk shares the machine, so the
#       rate only compares with figures from the same run.
#   scripts/intake-cost.sh instructions [seconds=20] [conns=16] [out=callgrind.out]
#       instructions per run under callgrind (needs valgrind), which repeat
#       from run to run where times do not; start-up and stop, measured
#       without load, are subtracted. `callgrind_annotate --inclusive=yes OUT`
#       shows where they go. Valgrind runs the daemon ~50x slower, so the
#       writer's batches are smaller than at full speed.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-cpu}"
case "$MODE" in
  cpu) DUR="${2:-10}"; CONNS="${3:-64}"; NEED="wrk" ;;
  instructions) DUR="${2:-20}"; CONNS="${3:-16}"; OUT="${4:-callgrind.out}"; NEED="wrk valgrind callgrind_annotate" ;;
  *) echo "usage: $0 cpu|instructions [seconds] [conns] [out]" >&2; exit 2 ;;
esac
BIN="${SLUICE_BIN:-$PWD/target/release}"
for tool in $NEED python3 curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y wrk valgrind)" >&2; exit 2; }
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

# Starts sluiced (under `$@`, e.g. valgrind) with state in $WORK/st-$1; sets PID and PORT.
start() {
  local tag=$1; shift
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$@" "$BIN/sluiced" --config "$WORK/sluiced.toml" --state-dir "$WORK/st-$tag" --pipelines "$WORK/p" \
    --socket "$WORK/s-$tag.sock" --listen "127.0.0.1:$PORT" > "$WORK/d-$tag.log" 2>&1 & PID=$!
  for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && return; sleep 0.1; done
  echo "sluiced did not answer; its log:" >&2; cat "$WORK/d-$tag.log" >&2; exit 1
}
load() { wrk -t"$1" -c"$CONNS" -d"${DUR}s" --latency -s ../shared/bench/webhook.lua "http://127.0.0.1:$PORT/hooks/deploy-web"; }
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
succeeded() {
  python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from runs where state = ?", ("succeeded",)).fetchone()[0])' "$WORK/st-$1/sluice.db"
}

if [ "$MODE" = cpu ]; then
  start cpu
  ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
  IDLE_RSS=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  T0=$(ticks); load 2 > "$WORK/wrk.txt"; T1=$(ticks)
  PEAK_RSS=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
  stop
  python3 - "$WORK/wrk.txt" "$(succeeded cpu)" "$((T1 - T0))" "$(getconf CLK_TCK)" "$IDLE_RSS" "$PEAK_RSS" <<'P'
import json, re, sys
wrk, runs, ticks, hz, idle, peak = sys.argv[1:]
s = json.loads(re.search(r"WRKJSON (\{.*\})", open(wrk).read()).group(1))
runs = int(runs)
print(f"{s['requests'] / (s['duration_us'] / 1e6):,.0f} accepted/s, p99 {s['p99_us'] / 1000:.2f} ms, {runs} runs succeeded")
print(f"daemon CPU per accepted-and-executed run: {int(ticks) / int(hz) * 1000 / max(runs, 1):.3f} ms (goal <= 0.06)")
print(f"RSS: idle {int(idle) / 1024:.1f} MiB, peak under load {int(peak) / 1024:.1f} MiB")
P
else
  total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
  start idle valgrind --tool=callgrind --callgrind-out-file="$WORK/idle.out"; stop
  start load valgrind --tool=callgrind --callgrind-out-file="$OUT"; load 1 > /dev/null; stop
  python3 - "$(succeeded load)" "$(total "$OUT")" "$(total "$WORK/idle.out")" <<'P'
import sys
runs, total, idle = (int(x) for x in sys.argv[1:])
print(f"runs: {runs}  instructions: {total:,} (start-up and stop {idle:,})")
print(f"instructions per accepted-and-executed run: {(total - idle) / max(runs, 1):,.0f}")
P
fi
