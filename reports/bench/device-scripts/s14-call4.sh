#!/bin/bash
# s14-call4 (1 GPU): bert-base's train step at batch 32, three trees on one machine: this tree
# (fused_linear: query, key and value as one GEMM; compiled, the stacked copies by torch.cat)
# with the strongest peer in one process; .device/alt (s14-call2's version: one node per input
# with one GEMM per projection, nodes under compile); this tree again (drift). Then
# configs/default.yaml end to end with this tree, an empty Triton cache per run.
source reports/bench/device-scripts/s5-common.sh s14-call4
rm -f $R/*
prime
ts bert-base 32 minbert-packed-compile,transformers-sdpa-ro
tsx() {  # tsx NAME TREE: our compiled packed step only, from TREE's benchmarks/train_step.py
  [ $(left) -lt 70 ] && return
  timeout 110 python3 $2/benchmarks/train_step.py --data-dir $DATA --encoder $ENC --configs bert-base \
    --batches 32 --n-batches 32 --warmup 32 --impls minbert-packed-compile --out $R/ts-$1.json 2> $R/ts-$1.log > /dev/null
  mark ts-$1 $?
}
tsx alt .device/alt
tsx again .
[ $(left) -gt 90 ] && ab after src default
grep -h '^{' $R/ts-*.log | cut -c1-260
