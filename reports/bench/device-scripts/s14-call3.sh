#!/bin/bash
# s14-call3 (1 GPU): train_ops' fused_linear (query, key and value as one GEMM on stacked weight
# copies; every projection's backward as one dx, one dW and one db GEMM), used by the packed
# training forward both eager and compiled (minbert::linear_grads). CUDA tests; bert-base's train
# step at batch 32 against the strongest peer in one process; the same step of commit HEAD
# (.device/before: no nodes under compile); a profile; configs/default.yaml end to end.
source reports/bench/device-scripts/s5-common.sh s14-call3
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_train_ops.py tests/test_packing_cuda.py \
  tests/test_cudagraph.py > $R/pytest.log 2>&1
mark pytest $?
unset TRITON_CACHE_DIR
ts bert-base 32 minbert-packed-compile,transformers-sdpa-ro
timeout 120 python3 .device/before/benchmarks/train_step.py --data-dir $DATA --encoder $ENC --configs bert-base \
  --batches 32 --n-batches 32 --warmup 32 --impls minbert-packed-compile --out $R/ts-before-bert-base-b32.json \
  2> $R/ts-before-bert-base-b32.log > /dev/null
mark ts-before $?
timeout 100 python3 benchmarks/profile_step.py --data-dir $DATA --encoder $ENC --config bert-base \
  --batch 32 --impl minbert-packed-compile --top 60 --out $R/profile-bert-base-b32.json > /dev/null 2> $R/profile.log
mark profile $?
ab after src default
grep -h '^{' $R/ts-*.log | cut -c1-200
python3 -c "
import json; d=json.load(open('$R/profile-bert-base-b32.json'))['profile']
print(d['wall_s'], d['kernels_per_step'], d['device_busy_fraction'], json.dumps(d['categories']))"
