#!/bin/bash
# s13-call3 (1 GPU): the embedding lookups back to nn.Embedding (s13-call2: padding the ids to take
# torch's sorting backward was slower); the weights and biases of the packed step's projections
# cast by one multi-tensor copy per step (train_ops.compute_copies). CUDA tests; the trainer's
# default step under benchmarks/profile_train.py and default end to end, this version ("after")
# against commit 83dabdd ("before": shared_input_linear casting per node), an empty Triton cache
# per run; best, this version only.
source reports/bench/device-scripts/s5-common.sh s13-call3
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_train_ops.py tests/test_packing_cuda.py \
  tests/test_cudagraph.py -k "cuda or graph or packed or copies or linear or autocast" > $R/pytest.log 2>&1
mark pytest $?
TOP=30  # prof: the helper in s5-common.sh (moved there after these calls ran)
prof after benchmarks
prof before .device/before/benchmarks
ab after src default
ab before $PWD/.device/before/src default
ab after src best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
