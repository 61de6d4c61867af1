#!/bin/bash
# The tree that ran: git c33761b with s15-call3.patch applied (train_ops.py); .device/before: c33761b.
# (As run, the script defined tsx itself; s5-common.sh's tsx is the same function.)
# s15-call3 (1 GPU): bert-base's train step at batch 32. This tree (compiled: the bias gradients
# as column sums that inductor writes, and no ones vector, which the partitioner had recomputed in
# the backward per node) with the strongest peer in one process; then .device/before (the
# previous commit) in the next process.
source reports/bench/device-scripts/s5-common.sh s15-call3
rm -f $R/*
ts bert-base 32 minbert-packed-compile,transformers-sdpa-ro
tsx before .device/before 50 0
grep -h '^{' $R/ts-*.log | cut -c1-200
