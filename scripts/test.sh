#!/usr/bin/env bash
# The project's test command (what the README and CI run). Works on a fresh
# machine and is idempotent:
#   1. format and lint checks (fail fast);
#   2. installs the official Azure IoT SDKs used by the end-to-end tests
#      (tests/sdk/node via `npm ci`, tests/sdk/python via pip) when missing or
#      out of date;
#   3. runs every test of the workspace, including twinhub/tests/sdk_e2e.rs,
#      which starts `twinhub serve` on ports 443/8883 (run as root, or grant
#      the binary CAP_NET_BIND_SERVICE);
#   4. runs the fuzz smoke (scripts/fuzz-smoke.sh: every cargo-fuzz target for
#      FUZZ_SECONDS, default 15, from its committed corpus). TWINHUB_SKIP_FUZZ=1
#      skips it for a quicker local run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> cargo fmt --all -- --check"
cargo fmt --all -- --check

echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

node_dir=tests/sdk/node
lock_hash=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
stamp="$node_dir/node_modules/.twinhub-package-lock.sha256"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_hash" ]]; then
  echo "==> npm ci ($node_dir)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" >"$stamp"
else
  echo "==> Node SDK packages up to date ($node_dir/node_modules)"
fi

echo "==> pip install -r tests/sdk/python/requirements.txt"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r tests/sdk/python/requirements.txt

echo "==> cargo bench --workspace --no-run (the micro-benchmarks keep compiling)"
cargo bench --workspace --no-run

echo "==> cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run: cargo prints a summary per test binary, and
# the last one (a doc-test binary) often counts zero tests.
summary=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed", p, f }' "$log")

fuzz="fuzz smoke skipped (TWINHUB_SKIP_FUZZ=1)"
if [[ "${TWINHUB_SKIP_FUZZ:-0}" != 1 ]]; then
  echo "==> fuzz smoke (scripts/fuzz-smoke.sh)"
  if FUZZ_SECONDS=${FUZZ_SECONDS:-15} bash scripts/fuzz-smoke.sh; then
    fuzz="fuzz smoke passed"
  else
    fuzz="fuzz smoke FAILED"
    status=1
  fi
fi
echo "$summary; $fuzz"
exit "$status"
