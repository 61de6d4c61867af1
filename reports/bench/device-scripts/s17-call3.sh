#!/bin/bash
# s17-call3 (1 GPU): this tree against .device/before (git b5195b5). This tree, beyond s17-call2's:
# each graph input 16-byte aligned in StaticInputs' buffer (s17-call2's packed-together inputs left
# cu_seqlens unaligned, so the first capture of some buckets compiled another variant of the
# attention kernel in the trainer: capture_s 2.5-2.8 s against 0.8), our AdamW's host loop in one
# pass, no gradient attach in a direct step's zero_grad, collate padding by indexing a token matrix.
# First each tree's trainer step under benchmarks/profile_train.py (host and device busy); then
# configs/default.yaml end to end, the trees in turn, twice each (after-1, before-1, after-2,
# before-2), 2 seeds per run, an empty Triton cache per run; last the CUDA tests of the graphs.
source reports/bench/device-scripts/s5-common.sh s17-call3
rm -f $R/*
prime
python3 -c "import torch._dynamo"  # its bytecode, as an installed torch has it (the optimizer imports it)
TOP=15 prof after benchmarks
TOP=15 prof before .device/before/benchmarks
ab after-1 src default
ab before-1 .device/before/src default
ab after-2 src default
ab before-2 .device/before/src default
[ $(left) -gt 60 ] && { timeout $(( $(left) - 5 )) python3 -m pytest -q -x tests/test_cudagraph.py \
  tests/test_eval_graphs_cuda.py > $R/pytest.log 2>&1; mark pytest $?; }
for f in $R/profile-train-*.json; do python3 -c "
import json; d=json.load(open('$f'))['variants']['shipped']
print('$f'.split('/')[-1], {k: d[k] for k in ('ms_per_step', 'kernels_per_step', 'device_busy_fraction', 'host_busy_fraction')})"; done
for f in $R/*-summary.json; do python3 -c "
import json; d=json.load(open('$f')); t=d['throughput']
print('$f'.split('/')[-1], d['wall_s'], t['epoch_train_s'], t['graphs'])"; done
