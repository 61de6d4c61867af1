#!/bin/bash
# s8-call2 (1 GPU): the packed, compiled train step against the strongest peer
# (transformers under torch.compile(mode="reduce-overhead")), in one process per size, now that the
# packed graphs leave their gradients where they write them (GraphedSteps(direct=True), as training
# does) and the optimizer reads them there. 32 distinct batches, 32 warm-up steps, median of 5.
source reports/bench/device-scripts/s5-common.sh s8-call2
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pyc
for cb in bert-base:32 bert-base:128 minilm-l6:32 minilm-l6:128; do
  cfg=${cb%:*}; b=${cb#*:}
  [ $(left) -lt 100 ] && break
  timeout $(( $(left) - 5 )) python3 benchmarks/train_step.py --data-dir $DATA --encoder $ENC --configs $cfg \
    --batches $b --n-batches 32 --warmup 32 --impls minbert-packed-compile,transformers-sdpa-ro \
    --out $R/ts-$cfg-b$b.json 2> $R/ts-$cfg-b$b.log >/dev/null
  mark ts-$cfg-$b $?
done
grep -h '^{' $R/ts-*.log | cut -c1-200
