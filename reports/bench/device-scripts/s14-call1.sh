#!/bin/bash
# s14-call1 (1 GPU): where bert-base's train step at batch 32 spends its time. The train step of
# the compiled packed path as shipped, the same with the train_ops projection nodes inside the
# compiled forward (-nodes), the eager packed path (train_ops nodes, no compile) and the strongest
# peer, in one process; then torch.profiler profiles of the first two (kernel categories).
# (-nodes: in that run's tree only, benchmarks/train_step.py read the suffix and let
# BertModel.forward_packed use the nodes while compiling, which it then did not; now it always does)
source reports/bench/device-scripts/s5-common.sh s14-call1
rm -f $R/*
ts bert-base 32 minbert-packed-compile,minbert-packed-compile-nodes,minbert-packed,transformers-sdpa-ro
pstep minbert-packed-compile
pstep minbert-packed-compile-nodes
grep -h '^{' $R/ts-*.log | cut -c1-200
for f in $R/profile-*.json; do python3 -c "
import json,sys; d=json.load(open('$f'))['profile']
print(d['impl'], d['wall_s'], d['kernels_per_step'], d['device_busy_fraction'], d['host_busy_fraction'])
print(json.dumps(d['categories']))"; done
