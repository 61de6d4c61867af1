#!/bin/bash
# s17-call4 (1 GPU): s17-call3's tree plus the gradient norm and clipping inside each one-graph
# training step (GraphedSteps(grad_norm=True)). First the CUDA tests of the graphs; then
# configs/default.yaml end to end, this tree and .device/before (git b5195b5), 2 seeds each, an
# empty Triton cache per run; this tree's step under benchmarks/profile_train.py; then
# configs/best.yaml end to end with this tree while the time lasts.
export BUDGET=370
source reports/bench/device-scripts/s5-common.sh s17-call4
rm -f $R/*
prime
python3 -c "import torch._dynamo"  # its bytecode, as an installed torch has it (the optimizer imports it)
timeout 100 python3 -m pytest -q -x tests/test_cudagraph.py > $R/pytest.log 2>&1; mark pytest $?
ab after src default
TOP=15 prof after benchmarks
ab before .device/before/src default
[ $(left) -gt 95 ] && ab after src best
for f in $R/profile-train-*.json; do python3 -c "
import json; d=json.load(open('$f'))['variants']['shipped']
print('$f'.split('/')[-1], {k: d[k] for k in ('ms_per_step', 'kernels_per_step', 'device_busy_fraction', 'host_busy_fraction')})"; done
for f in $R/*-summary.json; do python3 -c "
import json; d=json.load(open('$f')); t=d['throughput']
print('$f'.split('/')[-1], d['wall_s'], t['epoch_train_s'], t['graphs'])"; done
