#!/bin/bash
# s19-call1 (1 GPU): the packed train step with each layer's optimizer update overlapped with the
# backward of the layers below (benchmarks/overlap_step.py), bert-base at batch 32 and 128:
# the shipped step, per-layer compile with the update after the backward, per-layer compile
# with the overlapped update, both without an update, and the strongest peer, in one process.
export BUDGET=560
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s19-call1
rm -f $R/*
timeout 330 python3 benchmarks/overlap_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --out $R/overlap-b32.json > /dev/null 2> $R/overlap-b32.log; mark overlap-b32 $?
grep -h '^{' $R/overlap-b32.log | cut -c1-200
[ $(left) -gt 150 ] && timeout $(( $(left) - 10 )) python3 benchmarks/overlap_step.py --data-dir $DATA --encoder $ENC \
  --batch 128 --variants whole,layers-overlap,peer --out $R/overlap-b128.json > /dev/null 2> $R/overlap-b128.log
mark overlap-b128 $?
grep -h '^{' $R/overlap-b128.log | cut -c1-200
