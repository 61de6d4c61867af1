#!/bin/bash
# s19-call2 (1 GPU): why the overlapped update of s19-call1 gained nothing. Bert-base at batch
# 32: the shipped step; the overlapped torch fused update with the step's stream at high
# priority; the update as a Triton kernel per tensor limited to 16 or 32 programs (so that it
# holds few SMs beside the backward), with and without the priority.
export BUDGET=560
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s19-call2
rm -f $R/*
timeout 540 python3 benchmarks/overlap_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants whole,layers-overlap-prio,layers-overlap-t16,layers-overlap-t32,layers-overlap-t16-prio \
  --out $R/overlap-b32.json > /dev/null 2> $R/overlap-b32.log; mark overlap-b32 $?
grep -h '^{' $R/overlap-b32.log | cut -c1-200
