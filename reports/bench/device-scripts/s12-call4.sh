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
one() {  # one NAME SRC PRESET ARGS...: seeds 0 and 1 of SRC as run NAME
  local name=$1 src=$2 preset=$3; shift 3
  [ $(left) -lt 60 ] && return
  timeout $(( $(left) - 5 )) python3 benchmarks/e2e.py --preset configs/$preset.yaml --seeds 0,1 --run $name=$src \
    --fresh-triton-cache --keep /tmp/e2e-$preset --out $R/e2e-$preset-$name.json \
    -- --data-dir $DATA --model.encoder=$ENC "$@" 2> $R/e2e-$preset-$name.log >/dev/null
  mark e2e-$preset-$name $?
  for s in 0 1; do cp /tmp/e2e-$preset/$name-seed$s/summary.json $R/$preset-$name-seed$s-summary.json 2>/dev/null; done
  cp /tmp/e2e-$preset/$name-seed0/train.log $R/$preset-$name-seed0-train.log 2>/dev/null
}
one after src default
one before $PWD/.device/before/src default
one after src best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
