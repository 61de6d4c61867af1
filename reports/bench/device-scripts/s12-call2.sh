#!/bin/bash
# s12-call2 (1 GPU): this version ("after": pinned snapshot buffers reused across checkpoints,
# checkpoint files written by safetensors' and torch's own file writers, graph captures without
# the allocators' empty_cache, the kernel-compile children started by the CLI before it imports
# torch, os._exit once the command is done) against the previous one ("before": commit f339081,
# exported to .device/before/src), on one machine, each run with an empty Triton cache. The CUDA
# tests of the touched paths; one default run of "after" under s12-timing.py; then default end to
# end, after and before, alternating.
source reports/bench/device-scripts/s5-common.sh s12-call2
rm -f $R/*
prime
export TRITON_CACHE_DIR=/tmp/triton-tests
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_packing_cuda.py tests/test_cudagraph.py \
  tests/test_eval_graphs_cuda.py tests/test_resume.py -k "cuda or graph or snapshot or compile or packed" > $R/pytest.log 2>&1
mark pytest $?
t0=$EPOCHREALTIME
TRITON_CACHE_DIR=/tmp/triton-timing timeout 120 python3 reports/bench/device-scripts/s12-timing.py train \
  --config configs/default.yaml --run-dir /tmp/timing --overwrite --no-progress --data-dir $DATA --model.encoder=$ENC \
  > $R/timing-default.log 2>&1
mark timing-default $?
awk "BEGIN{print \"[t] process total\", $EPOCHREALTIME - $t0}" >> $R/timing-default.log
cp /tmp/timing/summary.json $R/timing-default-summary.json
ab after src default
ab before $PWD/.device/before/src default
grep -h "^\[t\]\|^\[sum\]" $R/timing-default.log
