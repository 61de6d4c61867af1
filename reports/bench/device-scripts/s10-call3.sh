#!/bin/bash
# s10-call3 (1 GPU): with varlen_kernel auto (our Triton kernel where attention dropout is on, the
# memory-efficient kernel where it is off): configs/best.yaml end to end with the Triton cache in
# /tmp/triton-e2e (it ran on s10-call2's machine, whose runs had filled that folder), the MiniLM-L6 train step at batches 32 and 128 against the strongest peer, then the
# evaluation throughput.
source reports/bench/device-scripts/s5-common.sh s10-call3
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-e2e
e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
export TRITON_CACHE_DIR=/tmp/triton-bench
ts minilm-l6 32 minbert-packed-compile-triton,transformers-sdpa-ro
ts minilm-l6 128 minbert-packed-compile-triton,transformers-sdpa-ro
[ $(left) -gt 60 ] && eval_tp
grep -h '^{' $R/ts-*.log | cut -c1-200
tail -3 $R/eval_throughput.log
