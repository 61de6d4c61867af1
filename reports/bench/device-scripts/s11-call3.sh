#!/bin/bash
# s11-call3 (1 GPU): the kernel compiled by two children (forward, backward) started before the
# model is built, and one warm-up per CUDA-graph capture after the first. The CUDA tests of the
# graphs and the packed paths; one seed of default with an empty Triton cache under
# s11-timing.py (phase time stamps, the interpreter's exit); both presets end to end.
source reports/bench/device-scripts/s5-common.sh s11-call3
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_cudagraph.py > $R/pytest.log 2>&1
mark pytest $?
export TRITON_CACHE_DIR=/tmp/triton-timing
t0=$EPOCHREALTIME
timeout 120 python3 reports/bench/device-scripts/s11-timing.py train --config configs/default.yaml --run-dir /tmp/timing \
  --overwrite --no-progress --data-dir $DATA --model.encoder=$ENC > $R/timing-default.log 2>&1
mark timing-default $?
awk "BEGIN{print \"[t] process total\", $EPOCHREALTIME - $t0}" >> $R/timing-default.log
cp /tmp/timing/summary.json $R/timing-default-summary.json
export TRITON_CACHE_DIR=/tmp/triton-default
e2e main default
export TRITON_CACHE_DIR=/tmp/triton-best
e2e main best --tasks.sst.phrases_file=$PWD/.device/sst-trees/train.txt
grep "^\[t\]" $R/timing-default.log
