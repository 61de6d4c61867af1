#!/bin/bash
# s18-call2 (1 GPU): the train-step table with this tree (the optimizer update in the packed
# step's graph): MiniLM-L6 at batch 32 and 128 and bert-base at batch 128, our compiled packed
# step against the strongest peer in one process; then torch.profiler profiles of our step for
# bert-base at batch 32 and 128 (benchmarks/profile_step.py) while the time lasts.
export BUDGET=560
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device
source reports/bench/device-scripts/s5-common.sh s18-call2
rm -f $R/*
prime
python3 -c "import torch._dynamo"
ts minilm-l6 32 minbert-packed-compile,transformers-sdpa-ro
ts minilm-l6 128 minbert-packed-compile,transformers-sdpa-ro
ts bert-base 128 minbert-packed-compile,transformers-sdpa-ro
for B in 32 128; do
  [ $(left) -lt 50 ] && break
  timeout $(( $(left) - 5 )) python3 benchmarks/profile_step.py --data-dir $DATA --encoder $ENC --config bert-base \
    --batch $B --impl minbert-packed-compile --top 25 --out $R/profile-bert-base-b$B.json > /dev/null 2> $R/profile-bert-base-b$B.log
  mark profile-b$B $?
done
grep -h '^{' $R/ts-*.log | cut -c1-230
