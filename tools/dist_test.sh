#!/usr/bin/env bash
# Distributed evaluation on one node with torchrun.
# Usage: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py options]
#   e.g. bash tools/dist_test.sh configs/retinanet_condensenetv2_c.py epoch_12.pth 8
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# Paths (CONFIG, CHECKPOINT, --work-dir) stay relative to the caller's directory.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
python -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
