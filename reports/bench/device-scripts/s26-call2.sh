#!/bin/bash
# s26-call2 (1 GPU): bert-base's packed master-weights step at batch 32 in one process, the peer
# first: with the weight-gradient stream, with the one-kernel attention backward, with both.
export BUDGET=570
source reports/bench/device-scripts/s5-common.sh s26-call2
rm -f $R/*
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $R/gpu.txt 2>&1
timeout $(( $(left) - 10 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,master-wgs,master-fbwd,master-wgs-fbwd --out $R/step-b32.json > /dev/null 2> $R/step-b32.log
mark step-b32 $?
grep -h '^{' $R/step-b32.log | cut -c1-260
grep -h "Error" $R/step-b32.log | tail -3
