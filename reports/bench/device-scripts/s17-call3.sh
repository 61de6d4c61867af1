#!/bin/bash
# s17-call3 (1 GPU): as s17-call2, with each graph input 16-byte aligned in StaticInputs' buffer
# (s17-call2's packed-together inputs left cu_seqlens unaligned, so the first capture of some
# buckets compiled another variant of the attention kernel in the trainer: capture_s 2.5-2.8 s
# against 0.8). configs/default.yaml end to end, this tree and .device/before (git b5195b5) in
# turn, twice each (after-1, before-1, after-2, before-2), 2 seeds per run, an empty Triton cache
# per run; then the CUDA tests of the graphs.
source reports/bench/device-scripts/s5-common.sh s17-call3
rm -f $R/*
prime
python3 -c "import torch._dynamo"  # its bytecode, as an installed torch has it (the optimizer imports it)
ab after-1 src default
ab before-1 .device/before/src default
ab after-2 src default
ab before-2 .device/before/src default
[ $(left) -gt 60 ] && { timeout $(( $(left) - 5 )) python3 -m pytest -q -x tests/test_cudagraph.py \
  tests/test_eval_graphs_cuda.py > $R/pytest.log 2>&1; mark pytest $?; }
for f in $R/*-summary.json; do python3 -c "
import json; d=json.load(open('$f')); t=d['throughput']
print('$f'.split('/')[-1], d['wall_s'], t['epoch_train_s'], t['graphs'])"; done
