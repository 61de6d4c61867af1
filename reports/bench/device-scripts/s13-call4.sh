#!/bin/bash
# s13-call4 (1 GPU): GraphedSteps warms up only before its first capture (later shapes have run
# eagerly before, on a stream already warmed). CUDA tests of the graphs and train_ops; default and best end to end, this version, an empty Triton cache per run; then default
# of commit 546c12f ("before": one warm-up per capture), while the budget lasts.
source reports/bench/device-scripts/s5-common.sh s13-call4
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 80 python3 -m pytest -q -p no:cacheprovider tests/test_cudagraph.py tests/test_train_ops.py \
  -k "cuda or graph or packed or copies or linear or autocast" > $R/pytest.log 2>&1
mark pytest $?
ab after src default
ab after src best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
ab before $PWD/.device/before/src default
