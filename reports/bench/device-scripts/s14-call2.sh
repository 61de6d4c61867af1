#!/bin/bash
# s14-call2 (1 GPU): the train_ops projection nodes inside the compiled packed forward, their
# backward GEMMs as one opaque operator (minbert::linear_grads) so that inductor keeps the fp32
# gradients the GEMMs write. bert-base's train step at batch 32, shipped (compile) vs -nodes vs
# the strongest peer in one process; a torch.profiler profile of -nodes.
# (-nodes: in that run's tree only, benchmarks/train_step.py read the suffix and let
# BertModel.forward_packed use the nodes while compiling, which it then did not; now it always does)
source reports/bench/device-scripts/s5-common.sh s14-call2
rm -f $R/*
ts bert-base 32 minbert-packed-compile-nodes,minbert-packed-compile,transformers-sdpa-ro
pstep minbert-packed-compile-nodes
grep -h '^{' $R/ts-*.log | cut -c1-200
tail -3 $R/ts-*.log | cut -c1-300
for f in $R/profile-*.json; do python3 -c "
import json,sys; d=json.load(open('$f'))['profile']
print(d['impl'], d['wall_s'], d['kernels_per_step'], d['device_busy_fraction'], d['host_busy_fraction'])
print(json.dumps(d['categories']))"; done
