#!/usr/bin/env bash
# Trains pause-lm on a Cloud TPU VM slice (single- or multi-host).
#
#   launch/tpu_vm.sh create    # create the slice (or its queued resource)
#   launch/tpu_vm.sh install   # copy this checkout to every worker, install
#   launch/tpu_vm.sh train     # run TRAIN_ARGS on all workers at once
#   launch/tpu_vm.sh check     # ahead-of-time memory check on worker 0
#   launch/tpu_vm.sh status | logs | stop | delete
#   launch/tpu_vm.sh all       # create (if missing), install, train
#
# Every worker runs the same command; JAX finds the other hosts of the slice
# by itself (no coordinator flags on TPU), each host reads its own input
# shards, and process 0 writes metrics and the config. Checkpoints go to
# MODEL_DIR on GCS, where every host writes its part. A preempted or stopped
# run resumes from MODEL_DIR when `train` is run again.
set -euo pipefail

# ---- Settings (override any of them in the environment) --------------------
# GCP project and zone that hold the TPU quota.
PROJECT=${PROJECT:-$(gcloud config get-value project 2>/dev/null)}
ZONE=${ZONE:-us-central2-b}
# Name of the TPU VM (and of its queued resource when QUEUED=1).
TPU_NAME=${TPU_NAME:-pause-lm}
# Slice type: v4-8 (1 host), v4-32 (4 hosts), v5litepod-16 (4 hosts),
# v5p-8 (1 host), ...
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
# TPU VM software image matching the slice (v4: tpu-ubuntu2204-base;
# v5e: v2-alpha-tpuv5-lite; v5p: v2-alpha-tpuv5).
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
# 1: request through a queued resource (waits for capacity); 0: create now.
QUEUED=${QUEUED:-0}
# 1: spot/preemptible capacity (cheaper, can be reclaimed; runs resume).
SPOT=${SPOT:-0}
# Run folder on GCS: checkpoints, TensorBoard files, config.gin.
MODEL_DIR=${MODEL_DIR:-gs://YOUR_BUCKET/runs/${TPU_NAME}}
# Where the checkout is copied on each worker.
REMOTE_DIR=${REMOTE_DIR:-pause-lm}
# Python on the workers (the TPU images ship 3.10; 3.11 is installed by
# `install` when missing).
REMOTE_PYTHON=${REMOTE_PYTHON:-python3.11}
# Gin files and overrides of the run (MODEL_DIR is added from above).
TRAIN_ARGS=${TRAIN_ARGS:---gin_file=gin/stdpt.gin}
# Log file on each worker.
REMOTE_LOG=${REMOTE_LOG:-train.log}
# -----------------------------------------------------------------------------

gcloud_tpu() {
  gcloud compute tpus tpu-vm "$@" --project="${PROJECT}" --zone="${ZONE}"
}

on_all_workers() {
  gcloud_tpu ssh "${TPU_NAME}" --worker=all --command="$1"
}

exists() {
  gcloud_tpu describe "${TPU_NAME}" >/dev/null 2>&1
}

create() {
  if exists; then
    echo "${TPU_NAME} exists; reusing it."
    return
  fi
  local capacity=()
  if [[ "${SPOT}" == 1 ]]; then
    capacity=(--spot)
  fi
  if [[ "${QUEUED}" == 1 ]]; then
    gcloud compute tpus queued-resources create "${TPU_NAME}" \
      --project="${PROJECT}" --zone="${ZONE}" --node-id="${TPU_NAME}" \
      --accelerator-type="${ACCELERATOR_TYPE}" \
      --runtime-version="${RUNTIME_VERSION}" "${capacity[@]}"
    echo "Queued; waiting until ${TPU_NAME} is ACTIVE."
    until gcloud compute tpus queued-resources describe "${TPU_NAME}" \
        --project="${PROJECT}" --zone="${ZONE}" \
        --format='value(state.state)' | grep -q ACTIVE; do
      sleep 60
    done
  else
    gcloud_tpu create "${TPU_NAME}" --accelerator-type="${ACCELERATOR_TYPE}" \
      --version="${RUNTIME_VERSION}" "${capacity[@]}"
  fi
}

install() {
  local archive
  archive=$(mktemp --suffix=.tar.gz)
  git archive --format=tar.gz -o "${archive}" HEAD
  gcloud_tpu scp "${archive}" "${TPU_NAME}:pause-lm.tar.gz" --worker=all
  rm -f "${archive}"
  on_all_workers "set -e
    command -v ${REMOTE_PYTHON} >/dev/null || {
      sudo apt-get update -q && sudo apt-get install -yq ${REMOTE_PYTHON} ${REMOTE_PYTHON}-venv; }
    mkdir -p ${REMOTE_DIR} && tar -xzf pause-lm.tar.gz -C ${REMOTE_DIR}
    cd ${REMOTE_DIR} && make install PYTHON=${REMOTE_PYTHON}
    .venv/bin/pip install -q -c requirements/constraints.txt 'jax[tpu]'"
}

train() {
  # nohup: the run outlives the ssh session; `logs` follows it.
  on_all_workers "cd ${REMOTE_DIR} && nohup .venv/bin/python -m pause_lm.train \
    ${TRAIN_ARGS} --gin.MODEL_DIR=\"'${MODEL_DIR}'\" > ${REMOTE_LOG} 2>&1 &"
  echo "Started on all workers; follow with: $0 logs"
}

check() {
  gcloud_tpu ssh "${TPU_NAME}" --worker=0 --command="cd ${REMOTE_DIR} && \
    .venv/bin/python -m pause_lm.train ${TRAIN_ARGS} \
    --gin.MODEL_DIR=\"'${MODEL_DIR}'\" --compile_only"
}

logs() {
  gcloud_tpu ssh "${TPU_NAME}" --worker=0 \
    --command="tail -n 50 -f ${REMOTE_DIR}/${REMOTE_LOG}"
}

status() {
  gcloud_tpu describe "${TPU_NAME}" --format='value(state,acceleratorType)'
}

stop() {
  # Ends the training processes; the slice keeps running (and billing).
  on_all_workers "pkill -TERM -f 'pause_lm.train' || true"
}

delete() {
  if [[ "${QUEUED}" == 1 ]]; then
    gcloud compute tpus queued-resources delete "${TPU_NAME}" \
      --project="${PROJECT}" --zone="${ZONE}" --force --quiet
  else
    gcloud_tpu delete "${TPU_NAME}" --quiet
  fi
}

case "${1:-}" in
  create) create ;;
  install) install ;;
  train) train ;;
  check) check ;;
  logs) logs ;;
  status) status ;;
  stop) stop ;;
  delete) delete ;;
  all) create && install && train ;;
  *)
    echo "usage: $0 create|install|train|check|logs|status|stop|delete|all" >&2
    exit 2
    ;;
esac
