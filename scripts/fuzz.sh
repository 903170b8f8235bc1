#!/usr/bin/env bash
# Fuzzes every parser of peer input (fuzz/fuzz_targets/) for a bounded time
# each: FUZZ_SECONDS (default 20). Fails on any crash; the input that
# crashed is left in fuzz/artifacts/<target>/ and becomes a regression test.
#
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP lets the
# stable toolchain (the only one this project uses) accept them. No
# sanitizer: the code under test is safe Rust, the fuzzer looks for panics.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -s none -O
for target in $(cargo fuzz list); do
  corpus=corpus/$target
  mkdir -p "$corpus"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  printf '%-14s ' "$target"
  log=$(mktemp)
  if ! cargo fuzz run -s none -O "$target" "$corpus" "${seeds[@]}" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    cat "$log"
    echo "fuzz target $target crashed; see fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "$runs runs in ${seconds}s, no crash"
  rm -f "$log"
done
