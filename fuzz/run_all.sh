#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after another, on its corpus
# (fuzz/corpus/<target>, made by make_seeds.sh and grown by the runs). Exits non-zero when a
# target finds a crash, timeout or out-of-memory (the input is saved in fuzz/artifacts/<target>/).
#
#   fuzz/run_all.sh 30                      # every target, 30 s each (what CI runs)
#   fuzz/run_all.sh 600 runtime_step        # one target, 10 minutes
#   FUZZ_RUNS=1000000 fuzz/run_all.sh 0     # every target until 1M executions each
#
# Toolchain: cargo-fuzz (`cargo install cargo-fuzz --locked`) on the repository's stable toolchain
# with RUSTC_BOOTSTRAP=1, which unlocks the nightly-only `-Zsanitizer=address` that cargo fuzz
# passes (the stable toolchain ships the AddressSanitizer runtime); no nightly is needed.
# Logs: fuzz/logs/<target>.log (libFuzzer's final stats: execs, execs/s, corpus size).
set -euo pipefail
cd "$(dirname "$0")"
# The instrumented build always lives in fuzz/target (a CARGO_TARGET_DIR meant for the main
# workspace would move it where make_seeds.sh and cargo fuzz do not look).
unset CARGO_TARGET_DIR
secs=${1:?usage: run_all.sh SECONDS [target...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(checkpoint_load runtime_step llama2c_import tokenizer_bin config_toml)
fi
export RUSTC_BOOTSTRAP=1
mkdir -p logs
cargo fuzz build >/dev/null
if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS"); else limit=(-max_total_time="$secs"); fi
for t in "${targets[@]}"; do
  extra=()
  case $t in
    checkpoint_load|runtime_step) extra=(-dict=squish.dict -max_len=16384) ;;
    llama2c_import) extra=(-max_len=32768) ;;
    tokenizer_bin) extra=(-max_len=8192) ;;
    config_toml) extra=(-max_len=4096) ;;
  esac
  mkdir -p "corpus/$t"
  echo "== fuzz $t: ${limit[*]}"
  if ! cargo fuzz run "$t" "corpus/$t" -- "${limit[@]}" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 "${extra[@]}" >"logs/$t.log" 2>&1; then
    tail -40 "logs/$t.log"
    echo "fuzz target $t failed: see fuzz/artifacts/$t/ and fuzz/logs/$t.log"
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo '?')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo '?')
  echo "$t: $execs executions ($rate/s), 0 crashes; corpus $(ls "corpus/$t" | wc -l) files"
done
