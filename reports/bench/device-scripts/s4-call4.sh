#!/bin/bash
# s4-call4 (1 GPU): CUDA tests of the packed path; configs/default.yaml trained with
# model.packing=on (seed 0); then the packed, compiled train step against the strongest peer
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src MINBERT_TEST_TOKENIZER_DIR=$PWD/.device/all-MiniLM-L6-v2-fp16
export MINBERT_DATA_DIR=$PWD/.device/data
ENC=.device/all-MiniLM-L6-v2-fp16; DATA=.device/data
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-560}))
left() { echo $((DEADLINE - $(date +%s))); }
mark() { echo "$1 rc=$2 at $(($(date +%s)-START))s" >> $OUT/timeline.txt; }
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_packed_training.py \
  tests/test_cudagraph.py -k "not compiled" > $OUT/pytest.log 2>&1; mark pytest $?
T0=$(date +%s.%N)
timeout 200 python3 -m minbert train --config configs/default.yaml --data-dir $DATA --model.encoder=$ENC \
  --model.packing=on --run-dir /tmp/default-packed --no-progress > $OUT/default-packed.log 2>&1; rc=$?
echo "{\"command_wall_s\": $(python3 -c "import time;print(round(time.time()-$T0,2))")}" > $OUT/default-packed-wall.json
mark default-packed $rc
cp /tmp/default-packed/summary.json $OUT/default-packed-summary.json 2>/dev/null
for cb in bert-base:32 minilm-l6:128 bert-base:128; do
  cfg=${cb%:*}; b=${cb#*:}
  [ $(left) -lt 60 ] && break
  timeout $(( $(left) - 5 )) python3 benchmarks/train_step.py --data-dir $DATA --encoder $ENC --configs $cfg \
    --batches $b --n-batches 32 --warmup 32 --impls minbert-packed-compile,transformers-sdpa-ro \
    --out $OUT/ts-$cfg-b$b.json 2> $OUT/ts-$cfg-b$b.log >/dev/null
  mark $cfg-$b $?
done
cat $OUT/timeline.txt; tail -1 $OUT/pytest.log; grep -h '^{' $OUT/*.log | cut -c1-160; tail -3 $OUT/default-packed.log
