#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 120), one
# after another in one process each (no -jobs: the 2 cores are shared), and
# prints runs, time and crashes per target.
# Installs cargo-fuzz when missing. Uses the nightly toolchain when installed;
# otherwise RUSTC_BOOTSTRAP=1 lets stable build the targets.
# FUZZ_SANITIZER=address (or none, the default: faster, still finds panics).
set -euo pipefail

seconds="${1:-120}"
case "$seconds" in
'' | *[!0-9]*)
	echo "usage: $0 [seconds-per-target]" >&2
	exit 2
	;;
esac
sanitizer="${FUZZ_SANITIZER:-none}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "installing cargo-fuzz" >&2
	cargo install cargo-fuzz --locked
fi
if rustup run nightly rustc --version >/dev/null 2>&1; then
	fuzz=(cargo +nightly fuzz)
else
	export RUSTC_BOOTSTRAP=1
	fuzz=(cargo fuzz)
fi

"${fuzz[@]}" build -s "$sanitizer"
status=0
summary=()
for target in $("${fuzz[@]}" list); do
	log="$(mktemp)"
	echo "== $target: ${seconds}s" >&2
	if "${fuzz[@]}" run -s "$sanitizer" "$target" -- \
		-max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
		crashes=0
	else
		crashes=1
		status=1
		tail -n 40 "$log" >&2
	fi
	runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)"
	summary+=("$target: ${runs:-?} runs in ${seconds}s, $crashes crash(es)")
	rm -f "$log"
done
printf '%s\n' "${summary[@]}"
[ "$status" -eq 0 ] || echo "crash inputs are in fuzz/artifacts/; turn each into a regression test" >&2
exit "$status"
