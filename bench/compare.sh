#!/usr/bin/env bash
# Twinhub side by side with mosquitto, on this machine, over loopback only.
#
#   bash bench/compare.sh            # the published size (1M twins, 19.9k connections)
#   bash bench/compare.sh quick      # a smoke-sized run (minutes)
#
# Installs mosquitto and openssl if missing (apt-get), builds the hub and the load
# generator in release mode, starts the hub on a temporary data directory bound to
# 127.0.0.1 on its own ports and mosquitto with a TLS listener on 127.0.0.1 (a
# certificate generated here), runs every scenario, stops everything it started
# and writes docs/benchmarks.md (numbers from this run + bench/findings.md).
#
# Ports (override through the environment): HTTPS_PORT=18443 MQTTS_PORT=18883
# MOSQ_PORT=18884. Every loop is bounded in count and time.
set -euo pipefail

SIZE=${1:-full}
HTTPS_PORT=${HTTPS_PORT:-18443}
MQTTS_PORT=${MQTTS_PORT:-18883}
MOSQ_PORT=${MOSQ_PORT:-18884}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
case "$SIZE" in
  full)  QUERY_TWINS=1000000; CONNECT_SIZES="5000 10000 19900"; SECONDS_PER_RUN=${SECONDS_PER_RUN} ;;
  quick) QUERY_TWINS=100000;  CONNECT_SIZES="2000"; SECONDS_PER_RUN=3 ;;
  *) echo "usage: $0 [full|quick]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/twinhub-compare.XXXXXX)
RESULTS="$WORK/results.json"
BENCH="$ROOT/target/release/twinhub-bench"
HUB_BIN="$ROOT/target/release/twinhub"
HUB_DIR="$WORK/hub"
HUB_PID=""
MOSQ_PID=""

log() { printf '\n### %s\n' "$*" >&2; }

stop_hub() {
  if [[ -n "$HUB_PID" ]] && kill -0 "$HUB_PID" 2>/dev/null; then
    kill -TERM "$HUB_PID"
    for _ in $(seq 1 300); do kill -0 "$HUB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$HUB_PID" 2>/dev/null || true
    wait "$HUB_PID" 2>/dev/null || true
  fi
  HUB_PID=""
}

stop_mosquitto() {
  if [[ -n "$MOSQ_PID" ]] && kill -0 "$MOSQ_PID" 2>/dev/null; then
    kill -TERM "$MOSQ_PID"
    for _ in $(seq 1 100); do kill -0 "$MOSQ_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$MOSQ_PID" 2>/dev/null || true
    wait "$MOSQ_PID" 2>/dev/null || true
  fi
  MOSQ_PID=""
}

cleanup() {
  stop_hub
  stop_mosquitto
  # The 1M-twin data directory is gigabytes: keep only the results.
  rm -rf "$HUB_DIR" "$WORK/query"
  echo "results kept in $RESULTS" >&2
}
trap cleanup EXIT

wait_port() {
  local port=$1
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$port after 60 s" >&2
  return 1
}

start_hub() {
  stop_hub
  "$HUB_BIN" --data-dir "$HUB_DIR" serve --bind 127.0.0.1 \
    --https-port "$HTTPS_PORT" --mqtts-port "$MQTTS_PORT" 2>>"$WORK/hub.log" &
  HUB_PID=$!
  wait_port "$HTTPS_PORT"
  wait_port "$MQTTS_PORT"
}

start_mosquitto() {
  stop_mosquitto
  mosquitto -c "$WORK/mosquitto/mosquitto.conf" 2>>"$WORK/mosquitto.log" &
  MOSQ_PID=$!
  wait_port "$MOSQ_PORT"
}

log "installing what is missing"
need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

log "building (release)"
cargo build --release -p twinhub -p twinhub-bench

log "mosquitto: certificate and TLS listener on 127.0.0.1:$MOSQ_PORT"
mkdir -p "$WORK/mosquitto"
(
  cd "$WORK/mosquitto"
  # ECDSA P-256 like the hub's generated certificates, so handshakes cost the same.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
    -out ca.pem -days 2 -subj "/CN=twinhub-bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
    -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
    -days 2 -extfile ext.cnf 2>/dev/null
  chmod 0644 server.key ca.pem server.pem
  cat >mosquitto.conf <<EOF
per_listener_settings false
allow_anonymous true
persistence false
max_connections -1
log_dest stderr
log_type error
log_type warning
listener $MOSQ_PORT 127.0.0.1
cafile $WORK/mosquitto/ca.pem
certfile $WORK/mosquitto/server.pem
keyfile $WORK/mosquitto/server.key
EOF
)
chmod 0755 "$WORK" "$WORK/mosquitto"

HUB_ARGS=(--data-dir "$HUB_DIR" --https-port "$HTTPS_PORT" --mqtts-port "$MQTTS_PORT")
MOSQ_ARGS=(--broker-port "$MOSQ_PORT" --broker-ca "$WORK/mosquitto/ca.pem")

log "hub: first start, devices for every scenario"
start_hub
MAX_CONNECT=0
for n in $CONNECT_SIZES; do ((n > MAX_CONNECT)) && MAX_CONNECT=$n; done
# Fleet "b-": 1000 devices for reported/desired/get; fleet "c-": the connect scenario.
"$BENCH" create "${HUB_ARGS[@]}" --prefix b- --devices 1000
"$BENCH" create "${HUB_ARGS[@]}" --prefix c- --devices "$MAX_CONNECT"

for pair in "100 10" "1000 1" "10 2"; do
  set -- $pair
  log "reported ${1}x${2} (Twinhub) vs mqtt-publish ${1}x${2} (mosquitto)"
  start_hub
  "$BENCH" --json "$RESULTS" reported "${HUB_ARGS[@]}" --prefix b- --clients "$1" --in-flight "$2" \
    --seconds "$SECONDS_PER_RUN" --server-pid "$HUB_PID"
  stop_hub
  start_mosquitto
  "$BENCH" --json "$RESULTS" mqtt-publish "${MOSQ_ARGS[@]}" --clients "$1" --in-flight "$2" \
    --seconds "$SECONDS_PER_RUN" --server-pid "$MOSQ_PID"
  stop_mosquitto
done

for n in $CONNECT_SIZES; do
  log "connect N=$n: Twinhub, then mosquitto (each freshly started)"
  start_hub
  sleep 1
  "$BENCH" --json "$RESULTS" connect "${HUB_ARGS[@]}" --prefix c- --clients "$n" --concurrency 64 \
    --server-pid "$HUB_PID" --settle 3
  stop_hub
  start_mosquitto
  sleep 1
  "$BENCH" --json "$RESULTS" connect "${MOSQ_ARGS[@]}" --clients "$n" --concurrency 64 \
    --server-pid "$MOSQ_PID" --settle 3
  stop_mosquitto
done

log "desired at 1,000 patches/s, twin GETs and direct methods"
start_hub
"$BENCH" --json "$RESULTS" desired "${HUB_ARGS[@]}" --prefix b- --devices 100 --rate 1000 \
  --seconds "$SECONDS_PER_RUN"
"$BENCH" --json "$RESULTS" get "${HUB_ARGS[@]}" --prefix b- --devices 1000 --concurrency 32 \
  --seconds "$SECONDS_PER_RUN"
log "direct methods at 1,000 and 3,000 calls/s over 100 devices"
for rate in 1000 3000; do
  "$BENCH" --json "$RESULTS" methods "${HUB_ARGS[@]}" --prefix b- --devices 100 --rate "$rate" \
    --seconds "$SECONDS_PER_RUN"
done
stop_hub

log "query with $QUERY_TWINS twins (loaded straight into a fresh database)"
"$BENCH" --json "$RESULTS" query --hub-bin "$HUB_BIN" --data-dir "$WORK/query" \
  --devices "$QUERY_TWINS" --https-port "$HTTPS_PORT" --mqtts-port "$MQTTS_PORT" \
  --selective-runs 20 --scan-runs 3 --hub-log "$WORK/query-hub.log"

log "writing docs/benchmarks.md"
"$BENCH" render --results "$RESULTS" --command "bash bench/compare.sh $SIZE" \
  --findings bench/findings.md --out docs/benchmarks.md
cp "$RESULTS" "$ROOT/target/benchmarks-results.json"
echo "wrote docs/benchmarks.md (results: target/benchmarks-results.json)" >&2
