#!/bin/bash
# Train-step throughput with the compiled transformers peers (benchmarks/train_step.py), one H200.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
python3 benchmarks/train_step.py --data-dir .device/data --encoder .device/all-MiniLM-L6-v2-fp16 \
  --configs minilm-l6,bert-base --batches 32,128 --out $OUT/train_step_peers.json 2> $OUT/train_step_peers.log
tail -5 $OUT/train_step_peers.log
