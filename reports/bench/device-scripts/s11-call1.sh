#!/bin/bash
# s11-call1 (1 GPU): the CUDA tests of our Triton kernel after its layout and Philox fixes, then one
# seed of each preset end to end under cProfile with an empty Triton cache: where the host time of
# a first run goes (imports, data, kernel compiles, graph capture, evaluation, plots).
source reports/bench/device-scripts/s5-common.sh s11-call1
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_varlen_triton.py tests/test_packing_cuda.py \
  tests/test_eval_graphs_cuda.py tests/test_cudagraph.py > $R/pytest.log 2>&1
mark pytest $?
# prof PRESET ARGS...: one seed of configs/PRESET.yaml under cProfile (empty Triton cache); the
# top functions by cumulative and by own time go to prof-PRESET.txt
prof() {
  local preset=$1; shift
  export TRITON_CACHE_DIR=/tmp/triton-prof-$preset
  local t0=$EPOCHREALTIME
  timeout $(( $(left) - 5 )) python3 -m cProfile -o /tmp/$preset.prof -m minbert train --config configs/$preset.yaml \
    --run-dir /tmp/prof-$preset --overwrite --no-progress --data-dir $DATA --model.encoder=$ENC "$@" > $R/prof-$preset.log 2>&1
  mark prof-$preset $?
  awk "BEGIN{print \"wall\", $EPOCHREALTIME - $t0, \"s\"}" >> $R/prof-$preset.log
  python3 -c "
import pstats, sys
s = pstats.Stats('/tmp/$preset.prof', stream=sys.stdout)
s.sort_stats('cumulative').print_stats(90)
s.sort_stats('tottime').print_stats(40)" > $R/prof-$preset.txt 2>&1
  cp /tmp/prof-$preset/summary.json $R/prof-$preset-summary.json 2>/dev/null
}
prof default
prof best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
