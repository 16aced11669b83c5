#!/bin/bash
# jaxlm on a Cloud TPU pod slice: every worker runs the same command (gcloud --worker=all) and
# JAX finds its peers from the TPU metadata (jaxlm/distributed.py). Config: LLaMA-2-7B shape
# (experiments/llama_7b.py) on a v5p-64 slice (32 chips, 8 hosts): pipeline over 4 stages x FSDP
# over 8 chips, 16 microbatches.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a RUN_DIR=/mnt/runs/llama7b-pp bash experiments/launch/tpu_pod.sh
#
# Each worker needs the repository at ~/jaxlm with `pip install -e . "jax[tpu]==0.10.2"`
# (e.g. one earlier `--worker=all --command="git clone ... && pip install ..."`). RUN_DIR must be
# the same shared directory on every worker (Filestore NFS, or a gcsfuse mount of a bucket):
# every process writes its part of each checkpoint there; only process 0 writes logs and metrics.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${RUN_DIR:?set RUN_DIR (shared by all workers)}"
DATA_DIR=${DATA_DIR:-$HOME/shared/data}

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  cd ~/jaxlm && JAXLM_DATA_DIR=$DATA_DIR python -m jaxlm.train \
    --config experiments/llama_7b.py --workdir $RUN_DIR \
    --config.mesh.stage=4 --config.mesh.fsdp=-1 \
    --config.pipeline.num_microbatches=16"
