#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: the same absl entry point on every host, JAX finds the pod itself.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b WORKDIR=gs://my-bucket/runs/e2e_paper \
#     CONFIG=configs/e2e_diffusion_lm.py bash experiments/launch/tpu_pod.sh
#
# Needs: gcloud with access to the TPU VM, this repository at $REPO_URL (or already cloned in
# ~/diffusion_text on every worker), and a WORKDIR every host can read and write (a GCS bucket: orbax
# writes checkpoints collectively; local disks are per host). Set the mesh in the config or with
# --config.mesh.* flags in EXTRA_FLAGS, e.g. "--config.mesh.data=-1 --config.mesh.fsdp=4".
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR}"
CONFIG=${CONFIG:-configs/e2e_diffusion_lm.py}
REPO_URL=${REPO_URL:-}
BRANCH=${BRANCH:-main}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
DATA_DIR=${DATA_DIR:-}  # raw dataset files (may be gs://); default: the dataset's own download

setup="cd ~ && if [ ! -d diffusion_text ]; then git clone --branch ${BRANCH} ${REPO_URL} diffusion_text; fi \
  && cd diffusion_text && git fetch -q && git checkout -q ${BRANCH} && git pull -q \
  && python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]'"
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all --command "${setup}"

train="cd ~/diffusion_text && DIFFUSION_TEXT_DATA_DIR=${DATA_DIR} .venv/bin/python -m experiments.train \
  --config ${CONFIG} --workdir ${WORKDIR} --distributed=auto ${EXTRA_FLAGS}"
# Every worker runs the same command; process 0 logs. Preemption sends SIGTERM: the run checkpoints,
# and re-running this script resumes it.
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all --command "${train}"
