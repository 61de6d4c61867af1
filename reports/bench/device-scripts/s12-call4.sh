#!/bin/bash
# s12-call4 (1 GPU): s12-call3's version with every warm-up and capture of one GraphedSteps /
# GraphedForward on one stream (a new stream per capture gave each graph memory of its own in
# the shared pool: the CUDA test run of s12-call3 ran out of memory). The CUDA tests of the graphs
# and the packed paths; default end to end, this version ("after") and commit f339081 ("before"),
# each run with an empty Triton cache; best, this version only.
source reports/bench/device-scripts/s5-common.sh s12-call4
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 110 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_cudagraph.py \
  tests/test_eval_graphs_cuda.py tests/test_resume.py -k "cuda or graph or snapshot or compile or packed or pool" \
  > $R/pytest.log 2>&1
mark pytest $?
ab after src default
ab before $PWD/.device/before/src default
ab after src best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
