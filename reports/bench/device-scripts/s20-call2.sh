#!/bin/bash
# s20-call2 (1 GPU): bert-base's packed step at batch 32 (benchmarks/master_weights_step.py), the
# peer first, then the shipped step and the step with bf16 working weights and fp32 master
# weights (minbert.training.optim.AdamW(master_weights=True)), in one process; then
# benchmarks/e2e.py on configs/best.yaml with our AdamW, without master weights (the A/B partner
# of s20-call1's best-master run).
export BUDGET=560
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s20-call2
rm -f $R/*
prime
timeout 400 python3 benchmarks/master_weights_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants peer,whole,master --out $R/master-b32.json > /dev/null 2> $R/master-b32.log; mark master-b32 $?
grep -h '^{' $R/master-b32.log | cut -c1-220
grep -h "Error" $R/master-b32.log | tail -3
ab adamw src best --optim.name=adamw
