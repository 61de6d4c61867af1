#!/bin/bash
# s18-call1 (1 GPU): the optimizer update captured in each one-graph training step
# (GraphedSteps(updater=AdamW), AdamW.graph_update). First the CUDA tests of the graphs, the
# step and resume; then bert-base's train step at batch 32: this tree's compiled packed step with
# the update in the graph, the same with the update from the host (-hostopt), and the strongest
# peer, in one process; then configs/default.yaml and configs/best.yaml end to end (2 seeds, an
# empty Triton cache per run); then this tree's step under benchmarks/profile_train.py.
export BUDGET=570
mkdir -p .device && tar xzf .device/sst-trees.tgz -C .device  # (carried packed: the 64 MiB limit)
source reports/bench/device-scripts/s5-common.sh s18-call1
rm -f $R/*
prime
python3 -c "import torch._dynamo"
timeout 150 python3 -m pytest -q -x tests/test_cudagraph.py tests/test_step.py tests/test_resume.py -k "cuda or graph or Graph" \
  > $R/pytest.log 2>&1; mark pytest $?
ts bert-base 32 minbert-packed-compile,minbert-packed-compile-hostopt,transformers-sdpa-ro
ab after src default
[ $(left) -gt 100 ] && ab after src best
[ $(left) -gt 40 ] && TOP=15 prof after benchmarks
grep -h '^{' $R/ts-*.log | cut -c1-260
for f in $R/*-summary.json; do python3 -c "
import json; d=json.load(open('$f')); t=d['throughput']
print('$f'.split('/')[-1], d['wall_s'], d['dev']['overall'] if 'dev' in d else '', t['epoch_train_s'], t['graphs'])"; done
