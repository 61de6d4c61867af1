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
BEST=--tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
one after src default
one after src best $BEST
one before $PWD/.device/before/src default
one before $PWD/.device/before/src best $BEST
