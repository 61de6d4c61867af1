#!/bin/bash
# s19-call7 (1 GPU): bert-base's packed step at batch 32 with bf16 working weights and fp32
# master weights (benchmarks/master_weights_step.py): the shipped step, the master-weights step
# and the peer, in one process.
export BUDGET=300
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s19-call7
rm -f $R/*
timeout $(( $(left) - 15 )) python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --out $R/master-b32.json > /dev/null 2> $R/master-b32.log; mark master-b32 $?
grep -h '^{' $R/master-b32.log | cut -c1-220
grep -h "Error" $R/master-b32.log | tail -3
