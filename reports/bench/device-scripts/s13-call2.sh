#!/bin/bash
# s13-call2 (1 GPU): the packed step's embedding lookups as train_ops.embedding_lookup (the ids
# padded to 3,073 so that torch's CUDA backward sorts them). CUDA tests of train_ops and the packed
# paths; benchmarks/embedding_backward.py; default end to end, this version ("after") against the
# previous commit ("before", the projections as shared_input_linear nodes), an empty Triton cache
# per run; best, this version only.
source reports/bench/device-scripts/s5-common.sh s13-call2
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_train_ops.py tests/test_packing_cuda.py \
  tests/test_cudagraph.py -k "cuda or graph or packed or lookup or linear or autocast" > $R/pytest.log 2>&1
mark pytest $?
timeout 60 python3 benchmarks/embedding_backward.py --out $R/embedding_backward.json > /dev/null 2> $R/embedding_backward.log
mark embedding-backward $?
ab after src default
ab before $PWD/.device/before/src default
ab after src best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
