#!/usr/bin/env bash
# Distributed training on one node with torchrun.
# Usage: bash tools/dist_train.sh CONFIG GPUS [tools/train.py options]
#   e.g. bash tools/dist_train.sh configs/retinanet_condensenetv2_c.py 8 --auto-scale-lr
# CPU-only machines: the configs' env_cfg.dist_cfg.backend must be 'gloo'
#   (--cfg-options env_cfg.dist_cfg.backend=gloo).
set -euo pipefail
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# Paths (CONFIG, CHECKPOINT, --work-dir) stay relative to the caller's directory.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
python -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "${@:3}"
