#!/bin/bash
# s12-call3 (1 GPU): this version ("after": s12-call2's plus a graph capture that empties the
# device cache only where it outnumbers the free memory, the gradient norm without a scaling pass
# when nothing is clipped, and a GPU run's plots drawn by a child process that imports matplotlib
# while the run trains) against commit f339081 ("before", .device/before/src), on one machine,
# each run with an empty Triton cache: the CUDA tests first, then both presets, after and before.
source reports/bench/device-scripts/s5-common.sh s12-call3
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_cudagraph.py \
  tests/test_eval_graphs_cuda.py tests/test_resume.py -k "cuda or graph or snapshot or compile or packed" > $R/pytest.log 2>&1
mark pytest $?
BEST=--tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
ab after src default
ab after src best $BEST
ab before $PWD/.device/before/src default
ab before $PWD/.device/before/src best $BEST
