#!/bin/bash
# s19-call4 (1 GPU): the benchmark scripts after their timing loops moved into shared helpers
# (train_step.time_steps, bench_io.time_us): bert-base's train step at batch 32 against the peer;
# the forward and backward without an update, with the weights in fp32 (cast at each step) and
# in bf16 (no casts: what the casts cost); the update alone.
export BUDGET=400
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s19-call4
rm -f $R/*
ts bert-base 32 minbert-packed-compile,transformers-sdpa-ro
grep -h '^{' $R/ts-bert-base-b32.log | cut -c1-160
timeout $(( $(left) - 40 )) python3 benchmarks/overlap_step.py --data-dir $DATA --encoder $ENC --batch 32 \
  --variants whole-noopt,whole-noopt-bf16 --out $R/overlap-b32.json > /dev/null 2> $R/overlap-b32.log
mark overlap-b32 $?
grep -h '^{' $R/overlap-b32.log | cut -c1-160
timeout 35 python3 benchmarks/optimizer_update.py --variants list,triton --out $R/optimizer-update.json \
  > /dev/null 2> $R/optimizer-update.log; mark optimizer-update $?
tail -2 $R/optimizer-update.log
