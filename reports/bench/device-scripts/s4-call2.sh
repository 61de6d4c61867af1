#!/bin/bash
# s4-call2 (1 GPU): packed-path CUDA tests, then the train-step benchmark with the packed
# implementations against the strongest peer (transformers + torch.compile reduce-overhead)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16
ENC=.device/all-MiniLM-L6-v2-fp16; DATA=.device/data
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-540}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/timeline.txt; }
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_packing.py > $OUT/pytest.log 2>&1; mark pytest $?
IMPLS=${IMPLS:-minbert,minbert-packed,minbert-packed-compile,minbert-packed-ro,transformers-sdpa-ro}
for cfg in ${CONFIGS:-minilm-l6 bert-base}; do
  timeout $(( $(left) - 10 )) python3 benchmarks/train_step.py --data-dir $DATA --encoder $ENC --configs $cfg \
    --batches 32,128 --impls $IMPLS --out $OUT/train_step-packed-$cfg.json 2> $OUT/train_step-packed-$cfg.log >/dev/null
  mark $cfg $?
done
cat $OUT/timeline.txt; tail -3 $OUT/pytest.log; grep -h '^{' $OUT/*.log | cut -c1-200
