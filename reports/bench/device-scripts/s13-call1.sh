#!/bin/bash
# s13-call1 (1 GPU): the packed step's projections as shared_input_linear nodes (model/linear.py, now train_ops.py:
# one cast of the input per node, dX accumulated by the GEMMs in x's dtype, dW and db written in
# fp32 by the GEMMs). CUDA tests of the new node and of the packed paths; the trainer's default
# step under benchmarks/profile_train.py, this version ("after") and the previous commit
# ("before", .device/before); default end to end, after and before, an empty Triton cache per run.
source reports/bench/device-scripts/s5-common.sh s13-call1
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_linear.py tests/test_packing_cuda.py \
  tests/test_cudagraph.py -k "cuda or graph or packed or linear or autocast" > $R/pytest.log 2>&1
mark pytest $?
# prof: the helper in s5-common.sh (moved there after this call ran)
prof after benchmarks
prof before .device/before/benchmarks
ab after src default
ab before $PWD/.device/before/src default
