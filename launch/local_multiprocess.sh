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
#
# When a process ends with a non-zero status (killed, out of memory, or stopped by its own
# error), the others are killed at once: their next collective would wait for the dead one
# until gloo times out (over a minute, then a C++ stack), and a SIGTERM save cannot complete
# without it. The last line says which process ended, how, where its log is, and that
# rerunning the same command resumes from the last checkpoint; the script exits with that
# process's status. SIGINT or SIGTERM to this script is passed on to every process (each
# saves a checkpoint and exits, as a run stopped by SIGTERM does).
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
stop_all() {  # stop_all SIGNAL: sends SIGNAL to every process still running.
  for pid in "${pids[@]}"; do
    kill "-$1" "${pid}" 2>/dev/null || true
  done
}
trap 'stop_all TERM' INT TERM

for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS} ${XLA_FLAGS:-}" \
  JAX_COORDINATOR_ADDRESS="127.0.0.1:${PORT}" \
  JAX_NUM_PROCESSES="${NUM_PROCESSES}" \
  JAX_PROCESS_ID="${i}" \
    "$@" >"${LOG_DIR}/process_${i}.log" 2>&1 &
  pids+=("$!")
  echo "Process ${i}: pid $!, log ${LOG_DIR}/process_${i}.log" >&2
done

# From here on this script writes to fd 3: the shell's own notices of a killed process
# ("line 82: 4242 Killed  JAX_PLATFORMS=cpu ...") go to fd 2, now /dev/null.
exec 3>&2 2>/dev/null

# Polls rather than `wait -n`: the shell reaps a process as soon as it ends (so `kill -0`
# fails) and keeps its status for `wait PID`, which tells which process it was on any bash.
ended=()  # ended[i] is set once process i has ended with status 0.
remaining=${NUM_PROCESSES}
failed='' status=0
while ((remaining > 0)) && [[ -z "${failed}" ]]; do
  sleep 0.2
  for ((i = 0; i < NUM_PROCESSES; i++)); do
    [[ -n "${ended[i]:-}" ]] && continue
    kill -0 "${pids[i]}" 2>/dev/null && continue
    rc=0
    wait "${pids[i]}" || rc=$?
    ended[i]=1
    remaining=$((remaining - 1))
    if ((rc != 0)); then
      failed=${i} status=${rc}
      break
    fi
  done
done

if [[ -n "${failed}" ]]; then
  stop_all KILL
  wait || true
  log="${LOG_DIR}/process_${failed}.log"
  if ((status > 128)) && signal=$(kill -l "$((status - 128))" 2>/dev/null); then
    how="was killed by SIG${signal} (exit status ${status})"
  else
    how="exited with status ${status}"
    echo "--- last lines of ${log}:" >&3
    tail -n 5 "${log}" >&3 || true
  fi
  echo "Process ${failed} of ${NUM_PROCESSES} (pid ${pids[failed]}) ${how}; log: ${log}." \
    "The other processes were stopped. Fix the cause if that log shows one, then rerun the" \
    "same command: it resumes from the last checkpoint." >&3
fi
wait || true
exit "${status}"
