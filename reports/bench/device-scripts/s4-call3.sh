#!/bin/bash
# session 4, call 3 (1 GPU): the packed, compiled train step (symbolic token count) against the
# strongest peer (transformers + torch.compile reduce-overhead), one process per config and batch
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16
ENC=.device/all-MiniLM-L6-v2-fp16; DATA=.device/data
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-540}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/timeline.txt; }
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py > $OUT/pytest.log 2>&1; mark pytest $?
for cb in bert-base:32 minilm-l6:128 bert-base:128; do
  cfg=${cb%:*}; b=${cb#*:}
  timeout $(( $(left) - 5 )) python3 benchmarks/train_step.py --data-dir $DATA --encoder $ENC --configs $cfg \
    --batches $b --n-batches 32 --warmup 32 --impls minbert-packed-compile,transformers-sdpa-ro \
    --out $OUT/ts-$cfg-b$b.json 2> $OUT/ts-$cfg-b$b.log >/dev/null
  mark $cfg-$b $?
done
cat $OUT/timeline.txt; tail -1 $OUT/pytest.log; grep -h '^{' $OUT/*.log | cut -c1-160
