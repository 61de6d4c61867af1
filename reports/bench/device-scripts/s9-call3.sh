#!/bin/bash
# s9-call3 (1 GPU): packed attention now runs the memory-efficient varlen kernel (s9-call2 measured
# it ahead of FlashAttention's on these sentence lengths). The CUDA tests of packing, CUDA graphs
# and graphed evaluation; then benchmarks/train_step.py with the new kernel, the same step on
# FlashAttention's kernel and the strongest peer in one process per size; configs/default.yaml
# end to end (2 seeds), Python's caches filled first as in s8-call1.
source reports/bench/device-scripts/s5-common.sh s9-call3
rm -f $R/*
prime
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_eval_graphs_cuda.py \
  tests/test_cudagraph.py > $R/pytest.log 2>&1
mark pytest $?
ts bert-base 128 minbert-packed-compile,minbert-packed-compile-flash,transformers-sdpa-ro
[ $(left) -gt 120 ] && e2e main default
ts bert-base 32 minbert-packed-compile,minbert-packed-compile-flash,transformers-sdpa-ro
ts minilm-l6 32 minbert-packed-compile,transformers-sdpa-ro
ts minilm-l6 128 minbert-packed-compile,transformers-sdpa-ro
grep -h '^{' $R/ts-*.log | cut -c1-200
