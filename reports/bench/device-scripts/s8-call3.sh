#!/bin/bash
# s8-call3 (1 GPU): torch.profiler profiles of the bert-base train step as s8-call2 measured
# it (packed, inductor, our CUDA graphs, gradients left where the graph writes them), at batch 32
# and 128, and of the strongest peer (transformers under torch.compile(mode="reduce-overhead")) at
# the same sizes, to say where the remaining time goes on each side.
source reports/bench/device-scripts/s5-common.sh s8-call3
rm -f $R/*
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc
for ib in minbert-packed-compile:32 minbert-packed-compile:128 transformers-sdpa-ro:32 transformers-sdpa-ro:128; do
  impl=${ib%:*}; b=${ib#*:}
  [ $(left) -lt 60 ] && break
  timeout $(( $(left) - 5 )) python3 benchmarks/profile_step.py --data-dir $DATA --encoder $ENC --config bert-base \
    --batch $b --impl $impl --top 15 --out $R/profile-$impl-bert-base-b$b.json > $R/profile-$impl-bert-base-b$b.log 2>&1
  mark profile-$impl-b$b $?
done
