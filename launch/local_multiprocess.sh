#!/usr/bin/env bash
# Runs one command as N cooperating JAX processes on this machine.
#
# Each process gets its own simulated CPU devices and joins the others through
# jax.distributed over loopback, with the gloo CPU collectives: the same
# multi-controller code path a TPU pod or GPU cluster takes, on a laptop. The
# tests use it; it is also how to try multi-host settings (input shards,
# meshes that span processes, checkpoints written by several hosts).
#
#   launch/local_multiprocess.sh 2 2 python -m pause_lm.train \
#       --gin_file=gin/quickstart.gin --gin.MODEL_DIR="'runs/two_hosts'"
#
# Arguments: NUM_PROCESSES DEVICES_PER_PROCESS COMMAND...
# Environment (optional):
#   LOG_DIR   Folder for process_<i>.log (stdout and stderr of process i).
#             Default: a new temporary folder, printed at the start.
#   PORT      Loopback port of the coordination service. Default: a free one.
# The script exits with the first non-zero status among the processes, and
# stops the others when one fails (otherwise they would wait for it forever).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS COMMAND..." >&2
  exit 2
fi
NUM_PROCESSES=$1
DEVICES_PER_PROCESS=$2
shift 2

PYTHON_BIN=${PYTHON_BIN:-python3}
if [[ -z "${PORT:-}" ]]; then
  PORT=$("${PYTHON_BIN}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
LOG_DIR=${LOG_DIR:-$(mktemp -d)}
mkdir -p "${LOG_DIR}"
echo "Logs of ${NUM_PROCESSES} processes in ${LOG_DIR}" >&2

pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "${pid}" 2>/dev/null || true
  done
}
trap cleanup INT TERM

for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS} ${XLA_FLAGS:-}" \
  JAX_COORDINATOR_ADDRESS="127.0.0.1:${PORT}" \
  JAX_NUM_PROCESSES="${NUM_PROCESSES}" \
  JAX_PROCESS_ID="${i}" \
    "$@" >"${LOG_DIR}/process_${i}.log" 2>&1 &
  pids+=("$!")
done

status=0
remaining=${#pids[@]}
while ((remaining > 0)); do
  # wait -n returns as soon as any process ends, so one failure stops all.
  if wait -n; then
    remaining=$((remaining - 1))
  else
    rc=$?
    echo "A process failed with status ${rc}; stopping the others." >&2
    for ((i = 0; i < NUM_PROCESSES; i++)); do
      echo "--- tail of ${LOG_DIR}/process_${i}.log" >&2
      tail -n 20 "${LOG_DIR}/process_${i}.log" >&2 || true
    done
    cleanup
    status=${rc}
    break
  fi
done
wait || true
exit "${status}"
