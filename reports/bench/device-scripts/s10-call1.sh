#!/bin/bash
# s10-call1 (1 GPU): packed attention with dropout on our Triton kernel (model/varlen_triton.py,
# 32-row tiles, a dropout mask its backward redraws; varlen_kernel auto now picks it for training).
# The CUDA tests of the kernel and of the packed paths; the dropout-mask check (flash, efficient,
# triton-32); kernel timings on real SST and QQP lengths; the bert-base train step at batch 128
# with FlashAttention's kernel and ours against the strongest peer; configs/default.yaml end to end
# with an empty Triton cache; then the bert-base train step at batch 32.
source reports/bench/device-scripts/s5-common.sh s10-call1
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
python3 -c "import triton, torch; print('triton', triton.__version__, 'torch', torch.__version__)" >> $R/env.txt 2>&1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_varlen_triton.py tests/test_packing_cuda.py \
  tests/test_eval_graphs_cuda.py tests/test_cudagraph.py > $R/pytest.log 2>&1
mark pytest $?
timeout 60 python3 benchmarks/attention_varlen.py --mask-check --out $R/mask-check.json > /dev/null 2> $R/mask-check.log
mark mask-check $?
timeout 120 python3 benchmarks/attention_varlen.py --data-dir $DATA --encoder $ENC --impls flash,efficient,triton-16,triton-32,triton-64 \
  --out $R/attention.json > /dev/null 2> $R/attention.log
mark attention $?
ts bert-base 128 minbert-packed-compile-triton,minbert-packed-compile-flash,transformers-sdpa-ro
export TRITON_CACHE_DIR=/tmp/triton-e2e  # empty: the first seed compiles the kernels, as a user's first run does
[ $(left) -gt 120 ] && e2e main default
ts bert-base 32 minbert-packed-compile-triton,minbert-packed-compile-flash,transformers-sdpa-ro
python3 -c "import json; [print(r) for r in json.load(open('$R/mask-check.json'))['records']]"
grep -h '^{' $R/attention.log | cut -c1-230
grep -h '^{' $R/ts-*.log | cut -c1-200
