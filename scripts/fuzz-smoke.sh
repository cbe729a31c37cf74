#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target in fuzz/ and runs each for a
# bounded time from its committed corpus; fails on any crash, panic, assertion,
# timeout (a hang) or out-of-memory. Meant for CI; see docs/reliability.md for
# longer runs.
#
#   bash scripts/fuzz-smoke.sh                 # every target, 20 s each, 2 at a time
#   FUZZ_SECONDS=60 bash scripts/fuzz-smoke.sh query twin_patch
#
# Environment: FUZZ_SECONDS (per target, default 20), FUZZ_JOBS (targets run at
# once, default 2), FUZZ_SANITIZER (address | none, default address).
#
# The machine's toolchain is stable Rust: cargo-fuzz's nightly flags (-Z
# sanitizer, sancov passes) are allowed with RUSTC_BOOTSTRAP=1, for this build only.
# cargo-fuzz itself is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-2}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

all_targets=$(cargo fuzz list)
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets <<<"$all_targets"
fi

dict_of() {
  case $1 in
    mqtt_decode | mqtt_session) echo fuzz/dicts/mqtt.dict ;;
    topic | sas | query) echo "fuzz/dicts/$1.dict" ;;
    *) echo fuzz/dicts/json.dict ;;
  esac
}

echo "==> cargo fuzz build (sanitizer: $sanitizer)"
start=$(date +%s)
cargo fuzz build --sanitizer "$sanitizer"
echo "    built in $(($(date +%s) - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_one() {
  local target=$1
  local corpus=fuzz/corpus/$target
  mkdir -p "$work/$target" "fuzz/artifacts/$target"
  local dirs=("$work/$target")
  [[ -d $corpus ]] && dirs+=("$corpus")
  # The first corpus directory receives new inputs: a scratch one, so the
  # committed corpus stays as it is.
  cargo fuzz run --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -dict="$(dict_of "$target")" -print_final_stats=1 \
    >"$work/$target.log" 2>&1
}

echo "==> running ${#targets[@]} targets, ${seconds} s each, $jobs at a time"
passed=0
failed=0
pending=("${targets[@]}")
declare -A pids=()
report() {
  local target=$1 status=$2
  local log=$work/$target.log
  local execs
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log" | tail -1)
  if ((status == 0)); then
    passed=$((passed + 1))
    printf '    %-14s ok     %10s execs in %s s\n' "$target" "${execs:-?}" "$seconds"
  else
    failed=$((failed + 1))
    printf '    %-14s FAILED (exit %s)\n' "$target" "$status"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written|artifact_prefix|Running:' "$log" | head -20 | sed 's/^/      /'
    echo "      reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $target fuzz/artifacts/$target/<file>"
    echo "      full log follows:"
    tail -60 "$log" | sed 's/^/      | /'
  fi
}
while ((${#pending[@]} > 0 || ${#pids[@]} > 0)); do
  while ((${#pending[@]} > 0 && ${#pids[@]} < jobs)); do
    target=${pending[0]}
    pending=("${pending[@]:1}")
    run_one "$target" &
    pids[$target]=$!
  done
  # Reap the runs that finished.
  for target in "${!pids[@]}"; do
    if ! kill -0 "${pids[$target]}" 2>/dev/null; then
      status=0
      wait "${pids[$target]}" || status=$?
      unset "pids[$target]"
      report "$target" "$status"
    fi
  done
  sleep 1
done

echo "    total $(($(date +%s) - start)) s including the build"
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
